"""`aws_extension.payload`: the engine request from a processing-like object (plain objects, no WebUI)."""

from __future__ import annotations

import base64
import dataclasses
import enum
import io
import json
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from aws_extension import payload
from aws_extension.payload import Batch


def txt2img_p(**fields: Any) -> SimpleNamespace:
    base = dict(
        prompt="a lighthouse",
        negative_prompt="blurry",
        styles=["ignored: already applied"],
        seed=1234,
        subseed=99,
        subseed_strength=0,
        seed_resize_from_h=-1,
        seed_resize_from_w=-1,
        sampler_name="DPM++ 2M",
        scheduler="Karras",
        batch_size=2,
        n_iter=3,
        steps=20,
        cfg_scale=6.5,
        width=640,
        height=384,
        restore_faces=False,
        tiling=False,
        eta=None,
        s_min_uncond=0.0,
        s_churn=0.0,
        s_tmax=math.inf,  # A1111 sets inf: not JSON
        s_tmin=0.0,
        s_noise=1.0,
        refiner_checkpoint=None,
        refiner_switch_at=None,
        disable_extra_networks=False,
        denoising_strength=0.7,
        override_settings={"CLIP_stop_at_last_layers": 2},
        enable_hr=False,
    )
    base.update(fields)
    return SimpleNamespace(**base)


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_txt2img_payload_carries_the_generation() -> None:
    body = payload.txt2img_payload(txt2img_p(), override_settings={"sd_model_checkpoint": "v1-5.safetensors"})

    assert body["prompt"] == "a lighthouse" and body["negative_prompt"] == "blurry"
    assert body["styles"] == []  # the prompts arrive with styles applied
    assert (body["seed"], body["subseed"], body["batch_size"], body["n_iter"]) == (1234, 99, 2, 3)
    assert (body["sampler_name"], body["scheduler"], body["steps"], body["cfg_scale"]) == (
        "DPM++ 2M",
        "Karras",
        20,
        6.5,
    )
    assert (body["width"], body["height"], body["denoising_strength"]) == (640, 384, 0.7)
    assert body["override_settings"] == {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "v1-5.safetensors"}
    assert body["enable_hr"] is False and "hr_scale" not in body
    assert "s_tmax" not in body and "eta" not in body and "refiner_checkpoint" not in body
    assert body["send_images"] is True and body["save_images"] is False and body["alwayson_scripts"] == {}
    json.dumps(body, allow_nan=False)


def test_txt2img_payload_hires_and_refiner() -> None:
    p = txt2img_p(
        enable_hr=True,
        hr_scale=1.5,
        hr_upscaler="Latent",
        hr_second_pass_steps=10,
        hr_resize_x=0,
        hr_resize_y=0,
        hr_checkpoint_name="hires.safetensors [abcdef1234]",
        hr_sampler_name=None,
        hr_prompt="",
        hr_negative_prompt="",
        refiner_checkpoint="sdxl_refiner.safetensors [7440042bbd]",
        refiner_switch_at=0.8,
    )
    batch = Batch(0, "styled prompt", "styled negative", 5, 6, 1, 1, hr_prompt="hires prompt", hr_negative_prompt="n")

    body = payload.txt2img_payload(p, batch)

    assert body["enable_hr"] is True
    assert (body["hr_scale"], body["hr_upscaler"], body["hr_second_pass_steps"]) == (1.5, "Latent", 10)
    assert body["hr_checkpoint_name"] == "hires.safetensors" and "hr_sampler_name" not in body
    assert (body["hr_prompt"], body["hr_negative_prompt"]) == ("hires prompt", "n")
    assert (body["refiner_checkpoint"], body["refiner_switch_at"]) == ("sdxl_refiner.safetensors", 0.8)
    assert (body["prompt"], body["seed"], body["batch_size"], body["n_iter"]) == ("styled prompt", 5, 1, 1)


def test_no_refiner_and_same_hires_checkpoint_are_left_out() -> None:
    p = txt2img_p(enable_hr=True, hr_checkpoint_name="Use same checkpoint", refiner_checkpoint="None")
    body = payload.txt2img_payload(p)
    assert "hr_checkpoint_name" not in body and "refiner_checkpoint" not in body and "refiner_switch_at" not in body


def img2img_p(**fields: Any) -> SimpleNamespace:
    p = txt2img_p(
        init_images=[Image.new("RGB", (64, 48), (10, 20, 30))],
        image_mask=Image.new("L", (64, 48), 255),
        resize_mode=1,
        denoising_strength=0.4,
        image_cfg_scale=1.5,
        mask_blur=4,
        mask_blur_x=4,
        mask_blur_y=4,
        inpainting_fill=1,
        inpaint_full_res=False,
        inpaint_full_res_padding=32,
        inpainting_mask_invert=0,
        initial_noise_multiplier=1.0,
    )
    for name, value in fields.items():
        setattr(p, name, value)
    return p


def test_img2img_payload_encodes_images_and_inpaint_settings() -> None:
    body = payload.img2img_payload(img2img_p())

    assert len(body["init_images"]) == 1 and decode(body["init_images"][0]).size == (64, 48)
    mask = decode(body["mask"])
    assert mask.size == (64, 48) and mask.getpixel((0, 0)) == 255
    assert (body["mask_blur"], body["inpainting_fill"], body["inpaint_full_res"]) == (4, 1, False)
    assert (body["inpaint_full_res_padding"], body["inpainting_mask_invert"], body["resize_mode"]) == (32, 0, 1)
    assert (body["denoising_strength"], body["image_cfg_scale"]) == (0.4, 1.5)
    assert body["include_init_images"] is False
    json.dumps(body, allow_nan=False)


def test_img2img_payload_uneven_blur_numpy_images_and_plain_mask() -> None:
    array = np.zeros((32, 16, 3), dtype=np.uint8)
    p = img2img_p(init_images=[array], image_mask=None, mask=np.full((32, 16), 255, np.uint8), mask_blur=None)
    p.mask_blur_x, p.mask_blur_y = 2, 6

    body = payload.img2img_payload(p)

    assert decode(body["init_images"][0]).size == (16, 32)
    assert decode(body["mask"]).mode == "L"
    assert "mask_blur" not in body and (body["mask_blur_x"], body["mask_blur_y"]) == (2, 6)


def test_img2img_without_init_image_is_refused() -> None:
    with pytest.raises(ValueError, match="init image"):
        payload.img2img_payload(img2img_p(init_images=[]))


def test_one_request_when_the_engine_reproduces_the_seeds() -> None:
    batches = payload.plan_batches(
        ["p"] * 6, ["n"] * 6, [10, 11, 12, 13, 14, 15], [7, 8, 9, 10, 11, 12], batch_size=2, n_iter=3
    )
    assert batches == [Batch(0, "p", "n", 10, 7, 2, 3)]
    # with a variation strength A1111 gives every image the same seed
    varied = payload.plan_batches(["p"] * 2, ["n"] * 2, [10, 10], [7, 8], batch_size=2, n_iter=1, subseed_strength=0.3)
    assert [(b.seed, b.count) for b in varied] == [(10, 2)]


def test_one_request_per_image_for_prompt_lists_and_seed_lists() -> None:
    matrix = payload.plan_batches(["a", "a, b"], ["n", "n"], [5, 5], [1, 2], batch_size=1, n_iter=2)
    assert [(b.first, b.prompt, b.seed, b.count) for b in matrix] == [(0, "a", 5, 1), (1, "a, b", 5, 1)]
    seeds = payload.plan_batches(["p"] * 2, ["n"] * 2, [5, 9], [1, 2], batch_size=2, n_iter=1)
    assert [b.seed for b in seeds] == [5, 9]
    hires = payload.plan_batches(
        ["p"] * 2, ["n"] * 2, [1, 2], [3, 4], batch_size=2, n_iter=1, all_hr_prompts=["x", "y"]
    )
    assert [b.hr_prompt for b in hires] == ["x", "y"]


def test_models_in_prompt() -> None:
    prompt = (
        "a <lora:detail_tweaker:0.6> cat, <LyCORIS-ignored> <lyco:lokr-style:1:0.5> <hypernet:ink:0.3>, EasyNegative"
    )
    used = payload.models_in_prompt(prompt, ["easynegative.safetensors", "cat-style.pt", "other.pt"])
    assert used["Lora"] == ["detail_tweaker", "lokr-style"]
    assert used["hypernetworks"] == ["ink"]
    assert used["embeddings"] == ["easynegative.safetensors"]  # "cat" alone is not "cat-style"
    assert payload.models_in_prompt("", ["x.pt"]) == {"Lora": [], "embeddings": [], "hypernetworks": []}


def test_job_models_resolve_names_against_the_cloud() -> None:
    cloud = {
        "Stable-diffusion": ["base.safetensors", "refiner.safetensors"],
        "Lora": ["detail_tweaker.safetensors"],
        "embeddings": ["bad-hands.pt"],
        "ControlNet": ["control_v11p_sd15_canny.pth"],
    }
    models, warnings = payload.job_models(
        "base.safetensors [0123456789]",
        None,
        prompts=["x <lora:detail_tweaker:1> <lora:missing:1>", "bad-hands"],
        extra_checkpoints=["refiner.safetensors [abcdef0123]", "None", ""],
        controlnets=["control_v11p_sd15_canny [d14c016b]"],
        cloud=cloud,
    )
    assert models == {
        "Stable-diffusion": ["base.safetensors", "refiner.safetensors"],
        "VAE": ["Automatic"],
        "embeddings": ["bad-hands.pt"],
        "Lora": ["detail_tweaker.safetensors"],
        "ControlNet": ["control_v11p_sd15_canny.pth"],
    }
    assert warnings == ["Lora missing is not in the cloud; the engine will skip it"]


class Mode(enum.Enum):
    SIMPLE = "Simple"


@dataclasses.dataclass
class Unit:
    enabled: bool = True
    module: str = "canny"
    model: str = "control_v11p_sd15_canny [d14c016b]"
    weight: float = 1.0
    image: Any = None
    control_mode: Mode = Mode.SIMPLE
    threshold_a: float = math.nan
    callback: Any = print


def test_alwayson_scripts_serialise_portable_scripts_only() -> None:
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    units = [
        Unit(image={"image": picture, "mask": Image.new("L", (8, 8))}),
        Unit(enabled=False),
        SimpleNamespace(enabled=True, model="None", image=None, _private=1),
    ]
    scripts = payload.alwayson_scripts([("ControlNet", units), ("Cloud inference", [True]), ("Seed", [1, 2])])

    assert list(scripts) == ["controlnet"]
    args = scripts["controlnet"]["args"]
    assert len(args) == 2
    first = args[0]
    assert first["control_mode"] == "Simple" and first["weight"] == 1.0
    assert "threshold_a" not in first and "callback" not in first
    assert decode(first["image"]["image"]).size == (8, 8) and decode(first["image"]["mask"]).mode == "L"
    assert args[1] == {"enabled": True, "model": "None", "image": None}
    assert payload.controlnet_models(scripts) == ["control_v11p_sd15_canny"]
    json.dumps(scripts, allow_nan=False)
    assert payload.alwayson_scripts([("ControlNet", [Unit(enabled=False)])]) == {}


def test_to_json_handles_models_and_numpy_scalars() -> None:
    class Model:
        def model_dump(self) -> dict[str, Any]:
            return {"value": np.float32(0.5), "count": np.int64(3), "bad": float("inf")}

    assert payload.to_json({"m": Model(), "t": (1, 2)}) == {"m": {"value": 0.5, "count": 3}, "t": [1, 2]}
    assert payload.encode_image("data:image/png;base64,QUJD") == "QUJD"
    assert payload.encode_image(b"ABC") == "QUJD"
