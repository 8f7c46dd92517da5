"""The stand-in WebUI with this repository installed as an extension, started the way the WebUI starts.

`start_standin` makes an extensions folder holding a link to the repository, points the stand-in at it, and
runs its `webui.webui()`: extensions' `preload.py`, then `scripts/*.py` loaded as modules, `before_ui`, the
UI built (each script's `ui()`), the extension tabs, `app_started`. Helpers build the txt2img/img2img
arguments as the UI's buttons send them (the form's fields, then every script's controls).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STANDIN = HERE / "webui_standin"
EXTENSION_NAME = "esd-cloud"


@dataclass
class Standin:
    """The started stand-in: its modules and folders."""

    root: Path
    extensions: Path
    demo: Any
    shared: ModuleType
    scripts: ModuleType
    processing: ModuleType
    txt2img: ModuleType
    img2img: ModuleType
    images: ModuleType
    sd_models: ModuleType
    script_callbacks: ModuleType
    script_loading: ModuleType
    errors: ModuleType

    def module_of(self, file_name: str) -> ModuleType:
        """A loaded script module by file name (`xyz_grid.py`, `cloud_inference.py`)."""
        for path, module in self.script_loading.loaded_scripts.items():
            if os.path.basename(path) == file_name:
                return module
        raise LookupError(file_name)


def start_standin(workdir: Path, args: str = "") -> Standin:
    """Start the stand-in WebUI once per process (its `modules` are process-wide, as in the WebUI)."""
    extensions = workdir / "extensions"
    extensions.mkdir(parents=True, exist_ok=True)
    link = extensions / EXTENSION_NAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    os.environ["WEBUI_STANDIN_EXTENSIONS"] = str(extensions)
    os.environ["WEBUI_STANDIN_DATA"] = str(workdir / "data")
    os.environ["WEBUI_STANDIN_ARGS"] = args
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))

    import webui as standin_webui
    from modules import (
        errors,
        images,
        img2img,
        processing,
        script_callbacks,
        script_loading,
        scripts,
        sd_models,
        shared,
        txt2img,
    )

    demo = standin_webui.webui()
    return Standin(
        root=STANDIN,
        extensions=extensions,
        demo=demo,
        shared=shared,
        scripts=scripts,
        processing=processing,
        txt2img=txt2img,
        img2img=img2img,
        images=images,
        sd_models=sd_models,
        script_callbacks=script_callbacks,
        script_loading=script_loading,
        errors=errors,
    )


def script_args(
    runner: Any,
    *,
    cloud: list[Any] | None = None,
    seed: int = -1,
    selected: str | None = None,
    **by_label: Any,
) -> list:
    """Every script's arguments as the UI sends them: each control's value; the cloud switch's five values;
    the Seed control; the script dropdown's index for `selected` (a selectable script's title) with its controls
    set `by_label`."""
    values = [ui_value(control) for control in runner.inputs]
    values[0] = 0
    for script in runner.alwayson_scripts:
        if type(script).__name__ == "CloudInference" and cloud is not None:
            values[script.args_from : script.args_to] = cloud
        if type(script).__name__ == "ScriptSeed":
            values[script.args_from] = seed
    if selected is not None:
        index = runner.titles.index(selected)
        values[0] = index + 1
        script = runner.selectable_scripts[index]
        for i, control in enumerate(script.controls):
            label = getattr(control, "label", None)
            if label in by_label:
                values[script.args_from + i] = by_label[label]
    return values


def ui_value(control: Any) -> Any:
    """What a control sends when left as built (a `type="index"` dropdown sends its choice's index)."""
    value = getattr(control, "value", None)
    if getattr(control, "type", None) == "index":
        labels = [choice[0] if isinstance(choice, (tuple, list)) else choice for choice in control.choices]
        return labels.index(value) if value in labels else None
    return value


def txt2img_form(
    prompt: str,
    *,
    negative_prompt: str = "",
    styles: list[str] | None = None,
    steps: int = 20,
    sampler_name: str = "Euler a",
    n_iter: int = 1,
    batch_size: int = 1,
    cfg_scale: float = 7.0,
    width: int = 64,
    height: int = 64,
    enable_hr: bool = False,
    hr_prompt: str = "",
) -> list[Any]:
    """The txt2img form's fields, in `txt2img_create_processing`'s order (before the scripts' arguments)."""
    return [
        prompt,
        negative_prompt,
        styles or [],
        steps,
        sampler_name,
        n_iter,
        batch_size,
        cfg_scale,
        height,
        width,
        enable_hr,
        0.7,  # denoising_strength
        2.0,  # hr_scale
        "Latent",  # hr_upscaler
        0,  # hr_second_pass_steps
        0,  # hr_resize_x
        0,  # hr_resize_y
        "Use same checkpoint",
        "Use same sampler",
        hr_prompt,
        "",  # hr_negative_prompt
        [],  # override_settings_texts
    ]


def img2img_form(prompt: str, init: Any, mask: Any, *, width: int = 64, height: int = 64) -> list:
    """The img2img form's fields for "inpaint upload" (mode 4), in `img2img`'s order, up to `request`."""
    return [
        4,  # mode: inpaint upload mask
        prompt,
        "",  # negative_prompt
        [],  # prompt_styles
        None,  # init_img
        None,  # sketch
        None,  # init_img_with_mask
        None,  # inpaint_color_sketch
        None,  # inpaint_color_sketch_orig
        init,  # init_img_inpaint
        mask,  # init_mask_inpaint
        20,  # steps
        "Euler a",  # sampler_name
        4,  # mask_blur
        0,  # mask_alpha
        1,  # inpainting_fill
        1,  # n_iter
        1,  # batch_size
        7.0,  # cfg_scale
        1.5,  # image_cfg_scale
        0.5,  # denoising_strength
        0,  # selected_scale_tab
        height,
        width,
        1.0,  # scale_by
        0,  # resize_mode
        False,  # inpaint_full_res
        32,  # inpaint_full_res_padding
        0,  # inpainting_mask_invert
        "",  # img2img_batch_input_dir
        "",  # img2img_batch_output_dir
        "",  # img2img_batch_inpaint_mask_dir
        [],  # override_settings_texts
        False,  # img2img_batch_use_png_info
        [],  # img2img_batch_png_info_props
        "",  # img2img_batch_png_info_dir
    ]
