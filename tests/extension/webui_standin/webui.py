"""Start-up in the WebUI's order (`webui.webui()` / `webui.api_only()`): scripts loaded (extensions' script
modules executed), `before_ui` callbacks, the UI (each tab's scripts instantiated and their `ui()` built,
then the extension tabs from `on_ui_tabs`), then `app_started(demo, app)`."""

import gradio as gr
import modules.img2img  # noqa: F401 - imported before the scripts load, as in the WebUI
import modules.txt2img  # noqa: F401
from modules import script_callbacks, scripts, shared


def initialize():
    scripts.load_scripts()


def create_ui():
    interfaces = []
    for is_img2img, name in ((False, "txt2img"), (True, "img2img")):
        runner = scripts.scripts_img2img if is_img2img else scripts.scripts_txt2img
        runner.initialize_scripts(is_img2img=is_img2img)
        with gr.Blocks(analytics_enabled=False) as interface:
            runner.prepare_ui()
            runner.setup_ui_for_section("seed")  # the form's sections come first, as in ui.create_ui
            runner.setup_ui()
        interfaces.append((interface, name, name))

    interfaces += script_callbacks.ui_tabs_callback()

    with gr.Blocks(analytics_enabled=False) as demo:
        for interface, label, ifid in interfaces:
            with gr.Tab(label, id=ifid):
                interface.render()

    shared.demo = demo
    demo.extension_tabs = [label for _, label, _ in interfaces[2:]]
    return demo


def webui(app=None):
    initialize()
    script_callbacks.before_ui_callback()
    demo = create_ui()
    script_callbacks.app_started_callback(demo, app)
    return demo


def api_only(app=None):
    initialize()
    script_callbacks.before_ui_callback()
    script_callbacks.app_started_callback(None, app)
