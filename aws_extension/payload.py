"""The engine's `/sdapi/v1/txt2img|img2img` request built from a WebUI processing object.

Plain Python: it reads attributes of any object shaped like A1111's `StableDiffusionProcessing*` (a
`SimpleNamespace` does in tests) and never imports `modules`. The caller resolves what needs the WebUI
(styles, random seeds, the cloud model lists) and passes the results in; `plan_batches` splits a generation
into the requests the engine can reproduce exactly (one prompt and consecutive seeds per request).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Fields copied from the processing object when set (A1111's API takes the same names).
COMMON_FIELDS = (
    "subseed_strength",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "sampler_name",
    "scheduler",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "restore_faces",
    "tiling",
    "eta",
    "s_min_uncond",
    "s_churn",
    "s_tmax",
    "s_tmin",
    "s_noise",
    "refiner_checkpoint",
    "refiner_switch_at",
    "disable_extra_networks",
)
TXT2IMG_FIELDS = ("denoising_strength",)
HIRES_FIELDS = (
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
)
IMG2IMG_FIELDS = (
    "denoising_strength",
    "resize_mode",
    "image_cfg_scale",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "initial_noise_multiplier",
)
NO_MODEL = ("", "None", "none", "Automatic", "Use same checkpoint")

# Always-on scripts whose arguments travel to the engine (by title, lower case, as A1111's API names them).
# Only scripts the engine is known to have: A1111's API rejects a request naming a script it lacks.
PORTABLE_SCRIPTS = ("controlnet",)

_EXTRA_NETWORK = re.compile(r"<(lora|lyco|hypernet):([^:>]+)(?::[^>]*)?>", re.IGNORECASE)
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,}\]\s*$")
_DROP = object()


@dataclasses.dataclass(frozen=True)
class Batch:
    """One engine request: `batch_size` × `n_iter` images from one prompt, seeds counting up from `seed`."""

    first: int  # index of its first image in the generation's all_* lists
    prompt: str
    negative_prompt: str
    seed: int
    subseed: int
    batch_size: int
    n_iter: int
    hr_prompt: str | None = None
    hr_negative_prompt: str | None = None

    @property
    def count(self) -> int:
        return self.batch_size * self.n_iter


def plan_batches(
    all_prompts: Sequence[str],
    all_negative_prompts: Sequence[str],
    all_seeds: Sequence[int],
    all_subseeds: Sequence[int],
    *,
    batch_size: int,
    n_iter: int,
    subseed_strength: float = 0.0,
    all_hr_prompts: Sequence[str] | None = None,
    all_hr_negative_prompts: Sequence[str] | None = None,
) -> list[Batch]:
    """The requests that reproduce a generation: one when the engine would compute the same prompts and seeds
    from one request (A1111: `seed + i`, or `seed` for all when a variation strength is set), else one per image
    (prompt matrix, lists of prompts or seeds)."""
    count = len(all_prompts)
    hr = list(all_hr_prompts) if all_hr_prompts else None
    hr_negative = list(all_hr_negative_prompts) if all_hr_negative_prompts else None
    step = 1 if not subseed_strength else 0
    uniform = (
        count == batch_size * n_iter
        and len(set(all_prompts)) == 1
        and len(set(all_negative_prompts)) == 1
        and (hr is None or len(set(hr)) == 1)
        and (hr_negative is None or len(set(hr_negative)) == 1)
        and list(all_seeds) == [int(all_seeds[0]) + i * step for i in range(count)]
        and list(all_subseeds) == [int(all_subseeds[0]) + i for i in range(count)]
    )
    sizes = [(0, batch_size, n_iter)] if uniform else [(i, 1, 1) for i in range(count)]
    return [
        Batch(
            first=index,
            prompt=all_prompts[index],
            negative_prompt=all_negative_prompts[index],
            seed=int(all_seeds[index]),
            subseed=int(all_subseeds[index]),
            batch_size=size,
            n_iter=iterations,
            hr_prompt=hr[index] if hr else None,
            hr_negative_prompt=hr_negative[index] if hr_negative else None,
        )
        for index, size, iterations in sizes
    ]


# --- the request -------------------------------------------------------------------------------------


def txt2img_payload(
    p: Any,
    batch: Batch | None = None,
    *,
    override_settings: Mapping[str, Any] | None = None,
    alwayson_scripts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `/sdapi/v1/txt2img` body for `p` (or for one `batch` of it)."""
    body = _common(p, batch, override_settings, alwayson_scripts)
    _copy_fields(p, body, TXT2IMG_FIELDS)
    if getattr(p, "enable_hr", False):
        body["enable_hr"] = True
        _copy_fields(p, body, HIRES_FIELDS)
        for name in ("hr_checkpoint_name",):
            if body.get(name) in NO_MODEL:
                body.pop(name, None)
            elif name in body:
                body[name] = model_name(body[name])
        hr_prompt = batch.hr_prompt if batch and batch.hr_prompt is not None else getattr(p, "hr_prompt", "")
        hr_negative = (
            batch.hr_negative_prompt
            if batch and batch.hr_negative_prompt is not None
            else getattr(p, "hr_negative_prompt", "")
        )
        body["hr_prompt"] = _first(hr_prompt) or ""
        body["hr_negative_prompt"] = _first(hr_negative) or ""
    else:
        body["enable_hr"] = False
    return body


def img2img_payload(
    p: Any,
    batch: Batch | None = None,
    *,
    override_settings: Mapping[str, Any] | None = None,
    alwayson_scripts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `/sdapi/v1/img2img` body for `p` (or for one `batch` of it): init images and mask as base64 PNG."""
    body = _common(p, batch, override_settings, alwayson_scripts)
    _copy_fields(p, body, IMG2IMG_FIELDS)
    init_images = getattr(p, "init_images", None) or []
    if not init_images:
        raise ValueError("img2img needs at least one init image")
    body["init_images"] = [encode_image(image) for image in init_images]
    # A1111 moves the constructor's `mask` to `image_mask` in __post_init__; plain objects may keep `mask`.
    mask = getattr(p, "image_mask", None)
    if mask is None:
        mask = getattr(p, "mask", None)
    if mask is not None:
        body["mask"] = encode_image(mask)
    blur = getattr(p, "mask_blur", None)
    if blur is not None:
        body["mask_blur"] = blur
    else:
        _copy_fields(p, body, ("mask_blur_x", "mask_blur_y"))
    body["include_init_images"] = False
    return body


def _common(
    p: Any,
    batch: Batch | None,
    override_settings: Mapping[str, Any] | None,
    alwayson_scripts: Mapping[str, Any] | None,
) -> dict[str, Any]:
    if batch is None:
        batch = Batch(
            first=0,
            prompt=_first(getattr(p, "prompt", "")) or "",
            negative_prompt=_first(getattr(p, "negative_prompt", "")) or "",
            seed=int(_first(getattr(p, "seed", -1))),
            subseed=int(_first(getattr(p, "subseed", -1))),
            batch_size=int(getattr(p, "batch_size", 1)),
            n_iter=int(getattr(p, "n_iter", 1)),
        )
    body: dict[str, Any] = {
        "prompt": batch.prompt,
        "negative_prompt": batch.negative_prompt,
        "styles": [],  # the prompts arrive with the WebUI's styles applied
        "seed": batch.seed,
        "subseed": batch.subseed,
        "batch_size": batch.batch_size,
        "n_iter": batch.n_iter,
    }
    _copy_fields(p, body, COMMON_FIELDS)
    if body.get("refiner_checkpoint") in NO_MODEL:
        body.pop("refiner_checkpoint", None)
        body.pop("refiner_switch_at", None)
    elif "refiner_checkpoint" in body:
        body["refiner_checkpoint"] = model_name(body["refiner_checkpoint"])
    overrides = {**(getattr(p, "override_settings", None) or {}), **(override_settings or {})}
    body["override_settings"] = to_json(overrides)
    body["override_settings_restore_afterwards"] = True
    body["send_images"] = True
    body["save_images"] = False
    body["alwayson_scripts"] = dict(alwayson_scripts or {})
    return body


def _copy_fields(p: Any, body: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        value = to_json(getattr(p, name, None))
        if value is not None and value is not _DROP:
            body[name] = value


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


# --- models --------------------------------------------------------------------------------------------


def model_name(title: str) -> str:
    """A name without the " [hash]" the WebUI's dropdowns add: `v1-5.safetensors [6ce0161689]` → `v1-5.safetensors`."""
    return _HASH_SUFFIX.sub("", str(title)).strip()


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def resolve_names(names: Iterable[str], available: Iterable[str]) -> tuple[list[str], list[str]]:
    """(cloud file names for `names`, names not found): a name matches a file by full name or by stem."""
    by_name = {}
    for file_name in available:
        by_name.setdefault(file_name, file_name)
        by_name.setdefault(_stem(file_name), file_name)
        by_name.setdefault(_stem(file_name).lower(), file_name)
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        clean = model_name(name)
        match = by_name.get(clean) or by_name.get(_stem(clean)) or by_name.get(_stem(clean).lower())
        if match is None:
            missing.append(clean)
        elif match not in found:
            found.append(match)
    return found, missing


def models_in_prompt(prompt: str, embeddings: Iterable[str] = ()) -> dict[str, list[str]]:
    """Extra networks a prompt uses: `<lora:name:w>` and `<lyco:…>` as Lora, `<hypernet:…>` as hypernetworks,
    and the `embeddings` (cloud file names) whose name appears in it as a word."""
    found: dict[str, list[str]] = {"Lora": [], "embeddings": [], "hypernetworks": []}
    for kind, name in _EXTRA_NETWORK.findall(prompt or ""):
        bucket = found["hypernetworks" if kind.lower() == "hypernet" else "Lora"]
        if name.strip() not in bucket:
            bucket.append(name.strip())
    text = _EXTRA_NETWORK.sub(" ", prompt or "")
    for file_name in embeddings:
        stem = _stem(file_name)
        used = stem and re.search(rf"(?<![\w-]){re.escape(stem)}(?![\w-])", text, re.IGNORECASE)
        if used and file_name not in found["embeddings"]:
            found["embeddings"].append(file_name)
    return found


def job_models(
    checkpoint: str,
    vae: str | None,
    *,
    prompts: Iterable[str] = (),
    extra_checkpoints: Iterable[str] = (),
    controlnets: Iterable[str] = (),
    cloud: Mapping[str, Iterable[str]] | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """The CreateInferenceJob `models` for a generation, and warnings for what the cloud does not have.

    `cloud` maps checkpoint types to the Active cloud file names; names are resolved against it (a prompt's
    `<lora:detail:0.6>` becomes `detail.safetensors`). Without it, prompt networks are left out."""
    cloud = {kind: list(names) for kind, names in (cloud or {}).items()}
    warnings: list[str] = []
    checkpoints = [model_name(checkpoint)]
    wanted = [name for name in extra_checkpoints if name not in NO_MODEL]
    extra, missing = resolve_names(wanted, cloud.get("Stable-diffusion", []))
    checkpoints += [name for name in extra if name not in checkpoints]
    warnings += [f"checkpoint {name} is not in the cloud" for name in missing]
    models: dict[str, list[str]] = {
        "Stable-diffusion": checkpoints,
        "VAE": [model_name(vae) if vae else "Automatic"],
        "embeddings": [],
    }
    text = "\n".join(prompts)
    used = models_in_prompt(text, cloud.get("embeddings", []))
    models["embeddings"] = used["embeddings"]
    for kind in ("Lora", "hypernetworks"):
        names, missing = resolve_names(used[kind], cloud.get(kind, []))
        if names:
            models[kind] = names
        warnings += [f"{kind} {name} is not in the cloud; the engine will skip it" for name in missing]
    names, missing = resolve_names([n for n in controlnets if n not in NO_MODEL], cloud.get("ControlNet", []))
    if names:
        models["ControlNet"] = names
    warnings += [f"ControlNet model {name} is not in the cloud" for name in missing]
    return models, warnings


# --- always-on scripts -------------------------------------------------------------------------------------


def alwayson_scripts(
    scripts_and_args: Iterable[tuple[str, Sequence[Any]]], portable: Iterable[str] = PORTABLE_SCRIPTS
) -> dict[str, dict[str, list[Any]]]:
    """A1111's `alwayson_scripts` for the portable scripts among (title, args): `{title: {"args": [...]}}`,
    each argument as JSON (images as base64 PNG, what cannot be serialised dropped). ControlNet keeps only its
    enabled units and is left out when none is."""
    wanted = {name.lower() for name in portable}
    result: dict[str, dict[str, list[Any]]] = {}
    for title, args in scripts_and_args:
        key = str(title).lower()
        if key not in wanted:
            continue
        values = [to_json(arg) for arg in args]
        values = [None if value is _DROP else value for value in values]
        if key == "controlnet":
            values = [unit for unit in values if isinstance(unit, dict) and unit.get("enabled", True)]
            if not values:
                continue
        result[key] = {"args": values}
    return result


def controlnet_models(scripts: Mapping[str, Mapping[str, Sequence[Any]]]) -> list[str]:
    """The ControlNet model names the units of an `alwayson_scripts` use (without " [hash]")."""
    units = (scripts.get("controlnet") or {}).get("args") or []
    names = [model_name(unit["model"]) for unit in units if isinstance(unit, dict) and unit.get("model")]
    return [name for name in dict.fromkeys(names) if name not in NO_MODEL]


def to_json(value: Any, _depth: int = 0) -> Any:
    """`value` as JSON-serialisable data: images as base64 PNG, enums by value, dataclasses and models as dicts;
    `_DROP` for what cannot be represented (inside containers those entries are left out or set to None)."""
    if _depth > 12:
        return _DROP
    deeper = _depth + 1
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, enum.Enum):
        return to_json(value.value, deeper)
    if _is_image(value):
        return encode_image(value)
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        return to_json(value.item(), deeper)  # a numpy scalar
    if isinstance(value, Mapping):
        items = {str(k): to_json(v, deeper) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _DROP}
    if isinstance(value, (list, tuple)):
        return [None if item is _DROP else item for item in (to_json(v, deeper) for v in value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, deeper)
    for dump in ("model_dump", "dict"):  # pydantic 2, then 1
        method = getattr(value, dump, None)
        if callable(method) and not isinstance(value, type):
            try:
                return to_json(method(), deeper)
            except Exception:
                break
    if hasattr(value, "__dict__") and not callable(value) and not isinstance(value, type):
        return to_json({k: v for k, v in vars(value).items() if not k.startswith("_")}, deeper)
    return _DROP


def _is_image(value: Any) -> bool:
    if hasattr(value, "save") and hasattr(value, "size") and hasattr(value, "mode"):
        return True  # PIL.Image.Image
    shape = getattr(value, "shape", None)
    return hasattr(value, "dtype") and isinstance(shape, tuple) and len(shape) in (2, 3)


def encode_image(image: Any) -> str:
    """Base64 PNG of a PIL image, a numpy array (H×W or H×W×C, uint8) or PNG bytes; a str passes through."""
    if isinstance(image, str):
        return image.split(",", 1)[1] if image.startswith("data:") and "," in image else image
    if isinstance(image, (bytes, bytearray)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if not hasattr(image, "save"):
        from PIL import Image  # the WebUI ships Pillow

        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
