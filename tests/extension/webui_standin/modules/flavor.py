"""Which WebUI the stand-in imitates: Forge where gradio 4 is installed (Forge's pins), else A1111."""

from importlib.metadata import version

FORGE = int(version("gradio").split(".", 1)[0]) >= 4
