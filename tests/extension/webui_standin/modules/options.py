"""`Options`: settings with defaults, read as attributes, stored in `data` (as `modules.options.Options`)."""

from typing import Any

DEFAULTS: dict[str, Any] = {
    "samples_save": True,
    "samples_format": "png",
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_save": True,
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "return_grid": True,
    "enable_pnginfo": True,
    "save_txt": False,
    "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images",
    "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids",
    "outdir_img2img_grids": "outputs/img2img-grids",
    "save_incomplete_images": False,
    "do_not_show_images": False,
    "samples_log_stdout": False,
    "sd_model_checkpoint": None,
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "face_restoration": False,
    "face_restoration_model": "CodeFormer",
    "tiling": False,
    "s_min_uncond": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_hr": 0.0,
    "initial_noise_multiplier": 1.0,
    "img_max_size_mp": 200,
    "persistent_cond_cache": True,
    "live_previews_enable": False,
    "show_progress_every_n_steps": 10,
    "add_model_hash_to_info": True,
    "add_model_name_to_info": True,
    "add_version_to_infotext": True,
    "add_user_name_to_info": False,
    "inpainting_mask_weight": 1.0,
}


class Options:
    def __init__(self, data_labels: dict[str, Any] | None = None, restricted_opts: set[str] | None = None):
        super().__setattr__("data_labels", dict(data_labels or DEFAULTS))
        super().__setattr__("data", {})
        super().__setattr__("restricted_opts", set(restricted_opts or ()))

    def __setattr__(self, key, value):
        if key in self.data or key in self.data_labels:
            self.data[key] = value
            return
        super().__setattr__(key, value)

    def __getattr__(self, item):
        data = super().__getattribute__("data")
        if item in data:
            return data[item]
        labels = super().__getattribute__("data_labels")
        if item in labels:
            return labels[item]
        raise AttributeError(item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """sets an option and calls its onchange callback, returning True if the option changed and False otherwise"""
        oldval = self.data.get(key, None)
        if oldval == value:
            return False
        self.data[key] = value
        return True

    def get_default(self, key):
        return self.data_labels.get(key)
