"""Cloud inference on txt2img and img2img: the switch the WebUI discovers (everything else is in aws_extension).

The WebUI loads this file as a module with the extension's folder on `sys.path`. Importing it does no network
call: it installs the cloud hook and registers the callbacks; the cloud's choices are fetched on request.
"""

import modules.scripts as scripts

from aws_extension import webui

webui.install()
webui.register_callbacks()


class CloudInference(scripts.Script):
    """Always visible on txt2img and img2img; its arguments are `webui.CloudSettings`."""

    def title(self):
        return webui.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return webui.build_ui(self, is_img2img)

    def setup(self, p, *args):
        webui.setup(p, *args)
