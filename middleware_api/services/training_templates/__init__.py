"""kohya sd-scripts configuration templates, one per base model type (`fm_type`), as TOML-ready dicts.

Sections only group the arguments: kohya reads every section's keys as command-line
arguments. The type of each value here is the type a request must give for that key.
Paths (model, dataset, output) are not here: the trainers pass them on the command line.
"""

from __future__ import annotations

from typing import Any

Config = dict[str, dict[str, Any]]

_COMMON: Config = {
    "model": {
        "v2": False,
        "v_parameterization": False,
    },
    "additional_network": {
        "network_module": "networks.lora",
        "network_dim": 32,
        "network_alpha": 16,
        "network_train_unet_only": False,
        "network_train_text_encoder_only": False,
    },
    "optimizer": {
        "optimizer_type": "AdamW8bit",
        "learning_rate": 0.0001,
        "unet_lr": 0.0001,
        "text_encoder_lr": 0.00005,
        "lr_scheduler": "cosine_with_restarts",
        "lr_scheduler_num_cycles": 1,
        "lr_warmup_steps": 0,
        "max_grad_norm": 1.0,
    },
    "dataset": {
        "resolution": "512,512",
        "enable_bucket": True,
        "min_bucket_reso": 256,
        "max_bucket_reso": 1024,
        "bucket_reso_steps": 64,
        "caption_extension": ".txt",
        "shuffle_caption": False,
        "keep_tokens": 0,
        "color_aug": False,
        "flip_aug": False,
    },
    "training": {
        "output_name": "lora",
        "max_train_epochs": 10,
        "save_every_n_epochs": 5,
        "train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": True,
        "mixed_precision": "fp16",
        "save_precision": "fp16",
        "seed": 1234,
        "clip_skip": 2,
        "max_token_length": 225,
        "cache_latents": True,
        "sdpa": True,
        "noise_offset": 0.0,
        "max_data_loader_n_workers": 0,
        "persistent_data_loader_workers": False,
        "lowram": False,
    },
    "saving": {
        "save_model_as": "safetensors",
    },
}

_SDXL_CHANGES: Config = {
    "additional_network": {"network_train_unet_only": True},
    "dataset": {"resolution": "1024,1024", "min_bucket_reso": 512, "max_bucket_reso": 2048},
    # SDXL has no clip skip and its own token length; None drops a key of the common template
    "training": {"cache_text_encoder_outputs": True, "no_half_vae": True, "clip_skip": None, "max_token_length": None},
}


def _merged(base: Config, changes: Config) -> Config:
    merged: Config = {}
    for section, values in base.items():
        combined = {**values, **changes.get(section, {})}
        merged[section] = {key: value for key, value in combined.items() if value is not None}
    return merged


TEMPLATES: dict[str, Config] = {
    "sd_1_5": _merged(_COMMON, {}),
    "sd_xl": _merged(_COMMON, _SDXL_CHANGES),
}
