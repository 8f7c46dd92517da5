"""The img2img button's function (Forge / A1111 1.8+ signature). Note `process_images` is imported by name,
as the WebUI's img2img.py does: re-pointing `modules.processing.process_images` alone does not reach it."""

from contextlib import closing

import modules.scripts
import modules.shared as shared
from modules import processing
from modules.processing import Processed, StableDiffusionProcessingImg2Img, process_images  # noqa: F401
from modules.shared import opts
from modules.txt2img import create_override_settings_dict


def img2img(
    id_task: str,
    mode: int,
    prompt: str,
    negative_prompt: str,
    prompt_styles,
    init_img,
    sketch,
    init_img_with_mask,
    inpaint_color_sketch,
    inpaint_color_sketch_orig,
    init_img_inpaint,
    init_mask_inpaint,
    steps: int,
    sampler_name: str,
    mask_blur: int,
    mask_alpha: float,
    inpainting_fill: int,
    n_iter: int,
    batch_size: int,
    cfg_scale: float,
    image_cfg_scale: float,
    denoising_strength: float,
    selected_scale_tab: int,
    height: int,
    width: int,
    scale_by: float,
    resize_mode: int,
    inpaint_full_res: bool,
    inpaint_full_res_padding: int,
    inpainting_mask_invert: int,
    img2img_batch_input_dir: str,
    img2img_batch_output_dir: str,
    img2img_batch_inpaint_mask_dir: str,
    override_settings_texts,
    img2img_batch_use_png_info: bool,
    img2img_batch_png_info_props: list,
    img2img_batch_png_info_dir: str,
    request,
    *args,
):
    override_settings = create_override_settings_dict(override_settings_texts)

    if mode == 0:  # img2img
        image = init_img
        mask = None
    elif mode == 2:  # inpaint
        image, mask = init_img_with_mask["image"], init_img_with_mask["mask"]
    elif mode == 4:  # inpaint upload mask
        image = init_img_inpaint
        mask = init_mask_inpaint
    else:
        raise NotImplementedError(f"the stand-in has img2img modes 0, 2 and 4, not {mode}")

    if selected_scale_tab == 1:
        width = int(image.width * scale_by)
        height = int(image.height * scale_by)

    assert 0.0 <= denoising_strength <= 1.0, "can only work with strength in [0.0, 1.0]"

    p = StableDiffusionProcessingImg2Img(
        sd_model=shared.sd_model,
        outpath_samples=opts.outdir_samples or opts.outdir_img2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_img2img_grids,
        prompt=prompt,
        negative_prompt=negative_prompt,
        styles=prompt_styles,
        sampler_name=sampler_name,
        batch_size=batch_size,
        n_iter=n_iter,
        steps=steps,
        cfg_scale=cfg_scale,
        width=width,
        height=height,
        init_images=[image],
        mask=mask,
        mask_blur=mask_blur,
        inpainting_fill=inpainting_fill,
        resize_mode=resize_mode,
        denoising_strength=denoising_strength,
        image_cfg_scale=image_cfg_scale,
        inpaint_full_res=inpaint_full_res,
        inpaint_full_res_padding=inpaint_full_res_padding,
        inpainting_mask_invert=inpainting_mask_invert,
        override_settings=override_settings,
    )

    p.scripts = modules.scripts.scripts_img2img
    p.script_args = args

    p.user = request.username

    with closing(p):
        processed = modules.scripts.scripts_img2img.run(p, *args)
        if processed is None:
            processed = process_images(p)

    shared.total_tqdm.clear()

    generation_info_js = processed.js()

    if opts.do_not_show_images:
        processed.images = []

    return processed.images + processed.extra_images, generation_info_js, processed.info, processed.comments


__all__ = ["img2img", "processing"]
