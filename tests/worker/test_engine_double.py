"""The engine double answers like A1111's API: real PNGs, A1111's info and error shapes, fault switches."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image

from middleware_api.worker.engine_double import FAIL_ERRORS, create_engine_app, make_png


@pytest.fixture
def engine() -> TestClient:
    return TestClient(create_engine_app())


def png_b64(width: int = 32, height: int = 24, colour: tuple[int, int, int] = (10, 20, 30)) -> str:
    return base64.b64encode(make_png(width, height, colour, colour)).decode()


def decode(image: str) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(image)))
    picture.load()
    return picture


def txt2img(engine: TestClient, **fields: Any) -> Any:
    return engine.post("/sdapi/v1/txt2img", json={"prompt": "a red fox", "width": 64, "height": 48, **fields})


def test_txt2img_batch_gives_pngs_of_the_size_with_seeds_and_infotexts(engine: TestClient) -> None:
    response = txt2img(
        engine,
        negative_prompt="blurry",
        seed=1234,
        batch_size=2,
        n_iter=2,
        steps=20,
        sampler_name="Euler a",
        override_settings={"sd_model_checkpoint": "fox.safetensors"},
        some_unknown_field={"kept": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    assert len(body["images"]) == 4
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert info["prompt"] == "a red fox" and info["all_prompts"] == ["a red fox"] * 4
    assert info["negative_prompt"] == "blurry" and info["all_negative_prompts"] == ["blurry"] * 4
    assert (info["width"], info["height"], info["batch_size"], info["steps"]) == (64, 48, 2, 20)
    assert info["sampler_name"] == "Euler a" and info["cfg_scale"] == 7.0
    assert info["sd_model_name"] == "fox.safetensors"
    assert len(info["all_subseeds"]) == 4 and info["job_timestamp"]
    assert info["infotexts"][1] == (
        "a red fox\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1235, Size: 64x48, Model: fox.safetensors"
    )
    pixels = set()
    for image, text in zip(body["images"], info["infotexts"], strict=True):
        picture = decode(image)
        assert picture.format == "PNG" and picture.size == (64, 48) and picture.mode == "RGB"
        assert picture.text["parameters"] == text
        top = picture.getpixel((0, 0))
        assert all(channel < 192 for channel in top)
        pixels.add(top)
    assert len(pixels) == 4, "each seed gives its own image"
    parameters = body["parameters"]
    assert parameters["prompt"] == "a red fox" and parameters["seed"] == 1234
    assert parameters["cfg_scale"] == 7.0 and parameters["some_unknown_field"] == {"kept": True}


def test_pixels_follow_seed_and_prompt(engine: TestClient) -> None:
    first = txt2img(engine, seed=7).json()["images"][0]
    assert txt2img(engine, seed=7).json()["images"][0] == first
    assert decode(txt2img(engine, seed=7, prompt="a blue whale").json()["images"][0]).getpixel((0, 0)) != (
        decode(first).getpixel((0, 0))
    )


def test_img2img_with_init_image_and_mask_is_tinted_and_drops_inputs_from_the_echo(engine: TestClient) -> None:
    response = engine.post(
        "/sdapi/v1/img2img",
        json={
            "prompt": "a red fox",
            "seed": 5,
            "width": 40,
            "height": 30,
            "init_images": [png_b64()],
            "mask": "data:image/png;base64," + png_b64(),
            "denoising_strength": 0.5,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    picture = decode(body["images"][0])
    assert picture.size == (40, 30)
    assert picture.getpixel((0, 0))[1] == 255 and picture.getpixel((0, 29))[1] == 255
    info = json.loads(body["info"])
    assert info["infotexts"][0].endswith("Model: double, Denoising strength: 0.5")
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None


def test_img2img_rejects_an_init_image_that_is_not_a_png(engine: TestClient) -> None:
    response = engine.post(
        "/sdapi/v1/img2img", json={"prompt": "x", "init_images": [base64.b64encode(b"GIF89a....").decode()]}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    assert "not a PNG" in response.json()["detail"]
    assert engine.post("/sdapi/v1/img2img", json={"prompt": "x"}).status_code == 400


def test_seed_minus_one_draws_a_random_seed(engine: TestClient) -> None:
    first = json.loads(txt2img(engine, seed=-1, batch_size=2).json()["info"])
    second = json.loads(txt2img(engine, seed=-1).json()["info"])
    assert first["seed"] >= 0 and first["all_seeds"] == [first["seed"], first["seed"] + 1]
    assert second["seed"] != first["seed"]
    assert f"Seed: {first['seed']}," in first["infotexts"][0]


def test_sides_over_2048_are_refused(engine: TestClient) -> None:
    response = txt2img(engine, width=4096)
    assert response.status_code == 400
    assert "width" in response.json()["detail"]


def test_fail_mode_and_fail_prompt_answer_a1111_errors(engine: TestClient) -> None:
    failing = txt2img(engine, prompt="a fox [[fail]]")
    assert failing.status_code == 500
    assert failing.json() == {"error": "RuntimeError", "detail": "", "body": "", "errors": FAIL_ERRORS}
    assert txt2img(engine).status_code == 200, "the prompt switch lasts one request"
    assert engine.post("/double/mode", json={"mode": "fail"}).status_code == 200
    assert txt2img(engine).status_code == 500
    assert engine.post("/sdapi/v1/extra-single-image", json={"image": png_b64()}).status_code == 500
    engine.post("/double/mode", json={"mode": "ok"})
    assert txt2img(engine).status_code == 200
    calls = engine.get("/double/calls").json()
    assert calls["count"] == 5 and calls["last_route"] == "/sdapi/v1/txt2img"
    assert calls["last_body"]["prompt"] == "a red fox"


def test_hang_and_delay(engine_url: str) -> None:
    body = {"prompt": "a fox", "width": 8, "height": 8}
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{engine_url}/sdapi/v1/txt2img", json={**body, "prompt": "[[hang]]"}, timeout=0.3)
    requests.post(f"{engine_url}/double/mode", json={"mode": "hang"}, timeout=5).raise_for_status()
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{engine_url}/sdapi/v1/txt2img", json=body, timeout=0.3)
    requests.post(f"{engine_url}/double/mode", json={"mode": "ok", "delay_s": 0.3}, timeout=5).raise_for_status()
    started = time.monotonic()
    response = requests.post(f"{engine_url}/sdapi/v1/txt2img", json=body, timeout=5)
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


def test_extras_and_rembg_return_the_input_images(engine: TestClient) -> None:
    image = png_b64(16, 12)
    single = engine.post("/sdapi/v1/extra-single-image", json={"image": image, "upscaling_resize": 2}).json()
    assert single == {"html_info": "", "image": image}
    batch = engine.post(
        "/sdapi/v1/extra-batch-images", json={"imageList": [{"data": image, "name": "a"}, {"data": image, "name": "b"}]}
    ).json()
    assert batch == {"html_info": "", "images": [image, image]}
    assert engine.post("/rembg", json={"input_image": image, "model": "u2net"}).json() == {"image": image}
    assert engine.post("/rembg", json={"input_image": "not base64!"}).status_code == 400


def test_housekeeping_routes(engine: TestClient) -> None:
    assert engine.get("/internal/ping").json() == {}
    models = engine.get("/sdapi/v1/sd-models").json()
    assert len(models) == 1 and models[0]["model_name"] == "double"
    assert engine.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert engine.post("/sdapi/v1/refresh-loras").status_code == 200
    assert engine.get("/double/calls").json()["refreshes"] == 2
    assert engine.post("/sdapi/v1/options", json={"sd_vae": "x.vae.pt"}).status_code == 200
    assert engine.get("/sdapi/v1/options").json()["sd_vae"] == "x.vae.pt"
    assert engine.post("/double/mode", json={"mode": "explode"}).status_code == 400


def test_a_512_square_png_is_cheap() -> None:
    best = min(_timed(lambda: make_png(512, 512, (1, 2, 3), (200, 100, 50), "text")) for _ in range(3))
    assert best < 0.05


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
