"""Callbacks extensions register (`on_ui_tabs`, `on_before_ui`, `on_app_started`, …) and how the WebUI calls
them; same names, signatures and call order (before_ui in reverse registration order)."""

from __future__ import annotations

import dataclasses
import inspect
import os

from modules import errors


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: object
    name: str = None


callback_map = dict(
    callbacks_app_started=[],
    callbacks_ui_tabs=[],
    callbacks_ui_settings=[],
    callbacks_before_ui=[],
    callbacks_script_unloaded=[],
    callbacks_image_saved=[],
)


def add_callback(callbacks, fun, *, name=None, category="unknown"):
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    callback_name = f"{os.path.basename(filename)}/{category}" + (f"/{name}" if name else "")
    callbacks.append(ScriptCallback(filename, fun, callback_name))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception:
            errors.report(f"Error executing callback app_started_callback for {c.script}", exc_info=True)


def ui_tabs_callback():
    res = []

    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception:
            errors.report(f"Error executing callback ui_tabs_callback for {c.script}", exc_info=True)

    return res


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception:
            errors.report(f"Error executing callback ui_settings_callback for {c.script}", exc_info=True)


def before_ui_callback():
    for c in reversed(callback_map["callbacks_before_ui"]):
        try:
            c.callback()
        except Exception:
            errors.report(f"Error executing callback before_ui for {c.script}", exc_info=True)


def image_saved_callback(params):
    for c in callback_map["callbacks_image_saved"]:
        try:
            c.callback(params)
        except Exception:
            errors.report(f"Error executing callback image_saved_callback for {c.script}", exc_info=True)


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_ui_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_image_saved(callback, *, name=None):
    add_callback(callback_map["callbacks_image_saved"], callback, name=name, category="image_saved")
