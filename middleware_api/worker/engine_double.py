"""A stand-in for an AUTOMATIC1111 WebUI started with `--api`: same routes and JSON shapes, no GPU.

Images are real PNGs of the requested size: a vertical gradient whose colours come
from a hash of (seed, prompt), each channel below 192; img2img output has its green
channel at 255, so a test can tell the two apart. Each PNG carries the infotext in a
`parameters` text chunk, as A1111 writes it.

Fault switches for tests: `POST /double/mode` `{"mode": "ok"|"fail"|"hang", "delay_s": 0}`
sets how the generation routes behave from then on; a prompt holding `[[fail]]` or
`[[hang]]` does the same for one request. Any `POST /double/mode` or `/double/reset`
releases requests that hang. `GET /double/calls` tells what was received.

Run: `python -m middleware_api.worker.engine_double --port 7861`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import json
import random
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MAX_SIDE = 2048
MAX_IMAGES = 64
HANG_S = 3600.0
MODEL_NAME = "double"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAIL_ERRORS = "CUDA out of memory (engine double)"

# A1111's API defaults for the fields the double uses; other fields pass through untouched.
_COMMON_DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
}
TXT2IMG_DEFAULTS: dict[str, Any] = {
    **_COMMON_DEFAULTS,
    "enable_hr": False,
    "denoising_strength": None,
    "hr_scale": 2.0,
    "hr_upscaler": None,
}
IMG2IMG_DEFAULTS: dict[str, Any] = {
    **_COMMON_DEFAULTS,
    "init_images": None,
    "mask": None,
    "denoising_strength": 0.75,
    "resize_mode": 0,
    "mask_blur": None,
    "inpainting_fill": 0,
    "inpaint_full_res": True,
    "inpainting_mask_invert": 0,
    "include_init_images": False,
}


class DoubleError(Exception):
    """An error answered in A1111's error shape with `status` (A1111 turns every exception into one)."""

    def __init__(self, status: int, detail: str, error: str = "HTTPException", errors: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error = error
        self.errors = errors


def error_response(status: int, detail: str, error: str = "HTTPException", errors: str | None = None) -> JSONResponse:
    """A1111's error body: `{"error", "detail", "body", "errors"}`."""
    if errors is None:
        errors = f"{status}: {detail}" if error == "HTTPException" else detail
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, "body": "", "errors": errors})


# --- PNG writing and reading (stdlib only) ---------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _text_chunk(keyword: str, text: str) -> bytes:
    try:
        return _chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # Like Pillow's PngInfo: text that latin-1 cannot hold goes into an uncompressed iTXt chunk.
        return _chunk(b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def make_png(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int], text: str = "") -> bytes:
    """An RGB PNG of `width`×`height`: a vertical gradient from `top` to `bottom`, `text` as `parameters`."""
    span = max(height - 1, 1)
    rows = []
    for y in range(height):
        pixel = bytes(top[c] + (bottom[c] - top[c]) * y // span for c in range(3))
        rows.append(b"\0" + pixel * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    if text:
        parts.append(_text_chunk("parameters", text))
    parts.append(_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def decode_base64(data: Any, what: str) -> bytes:
    """Bytes of a base64 string, with or without a `data:…;base64,` prefix; DoubleError 400 if not base64."""
    if not isinstance(data, str) or not data:
        raise DoubleError(400, f"{what} must be a base64 string")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise DoubleError(400, f"{what} is not valid base64: {error}") from error


def png_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; DoubleError 400 if `data` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise DoubleError(400, f"{what} is not a PNG image (the engine double reads PNG only)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- generation --------------------------------------------------------------------------------------


def _colours(seed: int, prompt: str, img2img: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()
    top = tuple(b % 192 for b in digest[0:3])
    bottom = tuple(b % 192 for b in digest[3:6])
    if img2img:
        top = (top[0], 255, top[2])
        bottom = (bottom[0], 255, bottom[2])
    return top, bottom  # type: ignore[return-value]


def _as_int(params: dict[str, Any], name: str, low: int, high: int | None = None) -> int:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DoubleError(422, f"{name} must be an integer")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise DoubleError(400, f"{name} must be {bound}, got {value}")
    return value


def _as_float(params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DoubleError(422, f"{name} must be a number")
    return float(value)


def _random_seed() -> int:
    return int(random.randrange(4294967294))


def infotext(
    prompt: str,
    negative: str,
    params: dict[str, Any],
    seed: int,
    width: int,
    height: int,
    model: str,
    denoising: float | None,
) -> str:
    """A1111's generation-parameters text for one image."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields = [
        f"Steps: {params['steps']}",
        f"Sampler: {params['sampler_name']}",
        f"CFG scale: {float(params['cfg_scale']):g}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {model}",
    ]
    if denoising is not None:
        fields.append(f"Denoising strength: {denoising:g}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def generate(body: dict[str, Any], img2img: bool) -> dict[str, Any]:
    """A1111's answer to a txt2img / img2img request: `images`, `parameters`, `info` (a JSON string)."""
    params = {**(IMG2IMG_DEFAULTS if img2img else TXT2IMG_DEFAULTS), **body}
    for name in ("sampler_name", "scheduler"):
        if params.get(name) is None:
            params[name] = _COMMON_DEFAULTS[name]
    prompt = params.get("prompt") or ""
    negative = params.get("negative_prompt") or ""
    if not isinstance(prompt, str) or not isinstance(negative, str):
        raise DoubleError(422, "prompt and negative_prompt must be strings")
    width = _as_int(params, "width", 1, MAX_SIDE)
    height = _as_int(params, "height", 1, MAX_SIDE)
    batch_size = _as_int(params, "batch_size", 1)
    n_iter = _as_int(params, "n_iter", 1)
    _as_int(params, "steps", 1)
    cfg_scale = _as_float(params, "cfg_scale")
    seed = _as_int(params, "seed", -1)
    subseed = _as_int(params, "subseed", -1)
    count = batch_size * n_iter
    if count > MAX_IMAGES:
        raise DoubleError(400, f"batch_size × n_iter must be at most {MAX_IMAGES}, got {count}")
    denoising: float | None = None
    if img2img:
        init_images = params.get("init_images")
        if not isinstance(init_images, list) or not init_images:
            raise DoubleError(400, "init_images must hold at least one base64 image")
        png_size(decode_base64(init_images[0], "init_images[0]"), "init_images[0]")
        if params.get("mask"):
            png_size(decode_base64(params["mask"], "mask"), "mask")
        denoising = _as_float(params, "denoising_strength")
    if seed == -1:
        seed = _random_seed()
    if subseed == -1:
        subseed = _random_seed()
    overrides = params.get("override_settings") or {}
    model = str(overrides.get("sd_model_checkpoint") or MODEL_NAME) if isinstance(overrides, dict) else MODEL_NAME

    seeds = [seed + i for i in range(count)]
    subseeds = [subseed + i for i in range(count)]
    texts = [infotext(prompt, negative, params, s, width, height, model, denoising) for s in seeds]
    images = []
    for s, text in zip(seeds, texts, strict=True):
        top, bottom = _colours(s, prompt, img2img)
        images.append(base64.b64encode(make_png(width, height, top, bottom, text)).decode("ascii"))

    info = {
        "prompt": prompt,
        "all_prompts": [prompt] * count,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * count,
        "seed": seed,
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": subseeds,
        "subseed_strength": params.get("subseed_strength"),
        "width": width,
        "height": height,
        "sampler_name": params["sampler_name"],
        "cfg_scale": cfg_scale,
        "steps": params["steps"],
        "batch_size": batch_size,
        "restore_faces": bool(params.get("restore_faces")),
        "sd_model_name": model,
        "sd_model_hash": None,
        "sd_vae_name": overrides.get("sd_vae") if isinstance(overrides, dict) else None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": params.get("styles") or [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "engine-double",
    }
    parameters = copy.deepcopy(params)
    if img2img and not params.get("include_init_images"):
        # A1111 drops the input images from the echo unless asked to keep them.
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _image_echo(data: Any, what: str) -> str:
    raw = decode_base64(data, what)
    png_size(raw, what)
    return base64.b64encode(raw).decode("ascii")


# --- the app -----------------------------------------------------------------------------------------


@dataclass
class DoubleState:
    """What the fault switches set and what `/double/calls` reports."""

    mode: str = "ok"
    delay_s: float = 0.0
    calls: int = 0
    last_route: str | None = None
    last_body: Any = None
    routes: list[str] = field(default_factory=list)
    refreshes: int = 0
    options: dict[str, Any] = field(
        default_factory=lambda: {"sd_model_checkpoint": f"{MODEL_NAME}.safetensors", "sd_vae": "Automatic"}
    )
    release: asyncio.Event | None = None

    def release_hangers(self) -> None:
        if self.release is not None:
            self.release.set()
        self.release = None


def create_engine_app() -> FastAPI:
    """The engine double as a FastAPI app; each app has its own state."""
    app = FastAPI(title="A1111 engine double")
    state = DoubleState()
    app.state.double = state

    @app.exception_handler(DoubleError)
    async def _double_error(_: Request, error: DoubleError) -> JSONResponse:
        return error_response(error.status, error.detail, error.error, error.errors)

    async def read_object(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as error:
            raise DoubleError(422, f"body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise DoubleError(422, "body must be a JSON object")
        return body

    async def faults(prompt: Any) -> None:
        """Apply the delay, then fail or hang as the mode or the prompt asks."""
        text = prompt if isinstance(prompt, str) else ""
        if state.delay_s > 0:
            await asyncio.sleep(state.delay_s)
        if state.mode == "hang" or "[[hang]]" in text:
            if state.release is None:
                state.release = asyncio.Event()
            release = state.release
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), HANG_S)
            raise DoubleError(503, "", error="RuntimeError", errors="released from hang (engine double)")
        if state.mode == "fail" or "[[fail]]" in text:
            raise DoubleError(500, "", error="RuntimeError", errors=FAIL_ERRORS)

    async def received(request: Request) -> dict[str, Any]:
        body = await read_object(request)
        state.calls += 1
        state.last_route = request.url.path
        state.last_body = body
        state.routes.append(request.url.path)
        await faults(body.get("prompt"))
        return body

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        return error_response(500, "", error=type(error).__name__, errors=str(error))

    async def generation(request: Request, img2img: bool) -> Any:
        body = await received(request)
        return await asyncio.to_thread(generate, body, img2img)

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request) -> Any:
        return await generation(request, img2img=False)

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request) -> Any:
        return await generation(request, img2img=True)

    @app.post("/sdapi/v1/extra-single-image")
    async def extra_single(request: Request) -> Any:
        body = await received(request)
        return {"html_info": "", "image": _image_echo(body.get("image"), "image")}

    @app.post("/sdapi/v1/extra-batch-images")
    async def extra_batch(request: Request) -> Any:
        body = await received(request)
        items = body.get("imageList")
        if not isinstance(items, list):
            raise DoubleError(422, "imageList must be a list of {data, name}")
        images = [
            _image_echo(item.get("data") if isinstance(item, dict) else None, f"imageList[{i}].data")
            for i, item in enumerate(items)
        ]
        return {"html_info": "", "images": images}

    @app.post("/rembg")
    async def rembg(request: Request) -> Any:
        body = await received(request)
        return {"image": _image_echo(body.get("input_image", body.get("image")), "input_image")}

    @app.get("/internal/ping")
    async def ping() -> Any:
        return {}

    @app.get("/sdapi/v1/sd-models")
    async def sd_models() -> Any:
        return [
            {
                "title": f"{MODEL_NAME}.safetensors [0000000000]",
                "model_name": MODEL_NAME,
                "hash": "0000000000",
                "sha256": "0" * 64,
                "filename": f"/models/Stable-diffusion/{MODEL_NAME}.safetensors",
                "config": None,
            }
        ]

    async def refresh() -> None:
        state.refreshes += 1

    for path in ("/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-loras", "/sdapi/v1/refresh-vae"):
        app.add_api_route(path, refresh, methods=["POST"])

    @app.get("/sdapi/v1/options")
    async def get_options() -> Any:
        return state.options

    @app.post("/sdapi/v1/options")
    async def set_options(request: Request) -> Any:
        state.options.update(await read_object(request))
        return None

    @app.post("/double/mode")
    async def set_mode(request: Request) -> Any:
        body = await read_object(request)
        mode = body.get("mode", "ok")
        delay = body.get("delay_s", 0.0)
        if mode not in ("ok", "fail", "hang"):
            raise DoubleError(400, "mode must be ok, fail or hang")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise DoubleError(400, "delay_s must be a number ≥ 0")
        state.mode, state.delay_s = mode, float(delay)
        state.release_hangers()
        return {"mode": state.mode, "delay_s": state.delay_s}

    @app.post("/double/reset")
    async def reset() -> Any:
        state.release_hangers()
        fresh = DoubleState()
        for name in ("mode", "delay_s", "calls", "last_route", "last_body", "routes", "refreshes", "options"):
            setattr(state, name, getattr(fresh, name))
        return {}

    @app.get("/double/calls")
    async def calls() -> Any:
        return {
            "count": state.calls,
            "last_route": state.last_route,
            "last_body": state.last_body,
            "routes": state.routes,
            "refreshes": state.refreshes,
        }

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the engine double with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description="A1111 API stand-in without a GPU")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)
    uvicorn.run(create_engine_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
