"""`cmd_opts`: the parser after every extension's `preload.py` ran, parsed from `$WEBUI_STANDIN_ARGS`."""

import os
import shlex

from modules import cmd_args, paths, script_loading

parser = cmd_args.parser

script_loading.preload_extensions(paths.extensions_dir, parser)

cmd_opts = parser.parse_args(shlex.split(os.environ.get("WEBUI_STANDIN_ARGS", "")))
