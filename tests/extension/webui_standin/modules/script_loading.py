"""`load_module` as the WebUI's: a file executed as a module named after its file name (Forge also registers
it in `sys.modules`; A1111 does not), and `preload_extensions` calling each extension's `preload(parser)`."""

import importlib.util
import os
import sys

from modules import errors, flavor

loaded_scripts = {}


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    if flavor.FORGE and module_spec.name not in sys.modules:
        sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)

    loaded_scripts[path] = module
    return module


def preload_extensions(extensions_dir, parser, extension_list=None):
    if not os.path.isdir(extensions_dir):
        return

    extensions = extension_list if extension_list is not None else os.listdir(extensions_dir)
    for dirname in sorted(extensions):
        preload_script = os.path.join(extensions_dir, dirname, "preload.py")
        if not os.path.isfile(preload_script):
            continue

        try:
            module = load_module(preload_script)
            if hasattr(module, "preload"):
                module.preload(parser)

        except Exception:
            errors.report(f"Error running preload() for {preload_script}", exc_info=True)
