"""The WebUI extension's plain-Python core: connection settings, the middleware client, uploads and jobs.

Nothing here imports the WebUI, gradio, pydantic or the middleware: HTTP is the only seam.
Submodules are imported on demand (`from aws_extension.client import MiddlewareClient`),
so importing the package is instant and does no I/O.
"""

__version__ = "1.5.0"
