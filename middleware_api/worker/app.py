"""The endpoint worker: SageMaker's inference-container contract in front of an A1111-compatible engine.

`GET /ping` is healthy while the engine answers. `POST /invocations` reads the
payload (inline, from a presigned URL or from S3), makes sure the listed models
are on disk, calls the engine's API for the task and returns the engine's JSON
as is. Errors come back as `{"status": "failed", "error": "..."}`, never an
empty body. This package ships alone in the inference image: it imports nothing
else from `middleware_api`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .models import MODEL_TYPES, ModelCache, ModelError, check_model_name, parse_s3_uri

log = logging.getLogger("esd.worker")

GIB = 1 << 30
ERROR_TEXT_LIMIT = 2000
PING_TIMEOUT_S = 2.0
PAYLOAD_TIMEOUT_S = 60.0
# Task → the engine's route.
TASK_ROUTES = {
    "txt2img": "/sdapi/v1/txt2img",
    "img2img": "/sdapi/v1/img2img",
    "extra-single-image": "/sdapi/v1/extra-single-image",
    "extra-batch-images": "/sdapi/v1/extra-batch-images",
    "rembg": "/rembg",
}
GENERATION_TASKS = ("txt2img", "img2img")
NO_MODEL = ("", "Automatic", "None")


@dataclass(frozen=True)
class WorkerSettings:
    """Where the engine and the models are; read from `ESD_*` environment variables by `from_env`."""

    engine_url: str = "http://127.0.0.1:7860"
    models_dir: Path = field(default_factory=lambda: Path("models"))
    model_cache_bytes: int = 100 * GIB
    engine_timeout_s: float = 900.0
    embeddings_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSettings:
        """Settings from `ESD_ENGINE_URL`, `ESD_MODELS_DIR`, `ESD_MODEL_CACHE_BYTES`, `ESD_ENGINE_TIMEOUT_S`,
        `ESD_EMBEDDINGS_DIR`."""
        env = os.environ if environ is None else environ
        models_dir = Path(env.get("ESD_MODELS_DIR") or "models")
        embeddings = env.get("ESD_EMBEDDINGS_DIR")
        return cls(
            engine_url=(env.get("ESD_ENGINE_URL") or cls.engine_url).rstrip("/"),
            models_dir=models_dir,
            model_cache_bytes=int(env.get("ESD_MODEL_CACHE_BYTES") or 100 * GIB),
            engine_timeout_s=float(env.get("ESD_ENGINE_TIMEOUT_S") or 900.0),
            embeddings_dir=Path(embeddings) if embeddings else None,
        )

    @property
    def embeddings_folder(self) -> Path:
        """`ESD_EMBEDDINGS_DIR`, else the `embeddings` folder beside the models folder (A1111's layout)."""
        return self.embeddings_dir or self.models_dir.parent / "embeddings"


class InvocationFailed(Exception):
    """Ends an invocation with HTTP `status` and `{"status": "failed", "error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def failed(status: int, message: str) -> JSONResponse:
    """The worker's error body."""
    return JSONResponse(status_code=status, content={"status": "failed", "error": message})


def _s3_client() -> Any:
    import boto3  # only in the SageMaker image; local workers get their payload inline or by URL

    return boto3.client("s3")


class Worker:
    """What `/invocations` does, apart from HTTP."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.engine_url = settings.engine_url.rstrip("/")
        self.cache = ModelCache(
            settings.models_dir, settings.model_cache_bytes, settings.embeddings_folder, s3_client_factory=_s3_client
        )
        self._http = requests.Session()
        # SageMaker sends one invocation per instance at a time; the engine runs one job at a time anyway.
        self._lock = threading.Lock()

    def ping(self) -> tuple[bool, str]:
        """(healthy, reason): whether the engine answers `/internal/ping` within 2 s."""
        try:
            response = requests.get(f"{self.engine_url}/internal/ping", timeout=PING_TIMEOUT_S)
        except requests.RequestException as error:
            return False, f"engine at {self.engine_url} not reachable: {error}"
        if not response.ok:
            return False, f"engine at {self.engine_url} not reachable: /internal/ping answered {response.status_code}"
        return True, ""

    def invoke(self, request: Any) -> bytes:
        """Run one invocation; the engine's JSON body. InvocationFailed on any failure."""
        if not isinstance(request, dict):
            raise InvocationFailed(400, "the invocation must be a JSON object")
        task = request.get("task")
        if task not in TASK_ROUTES:
            raise InvocationFailed(400, f"unknown task {task!r}; known: {', '.join(TASK_ROUTES)}")
        models = self._models(request.get("models"))
        payload = self._payload(request)
        with self._lock:
            log.info("invocation %s: %s for %s", request.get("inference_id"), task, request.get("username"))
            wanted = [model for model in models if not model.get("skip")]
            with self.cache.pinned({self.cache.key(model["type"], model["model_name"]) for model in wanted}):
                self._fetch_models(wanted)
                if task in GENERATION_TASKS:
                    self._select_models(payload, models)
                return self._call_engine(TASK_ROUTES[task], payload)

    # --- the request ---

    @staticmethod
    def _models(value: Any) -> list[dict[str, Any]]:
        """The listed models that name a file, each `{type, model_name, url, s3}`, checked."""
        if value is None:
            return []
        if not isinstance(value, dict):
            raise InvocationFailed(400, "models must be an object: {type: [{model_name, s3, ...}]}")
        listed = []
        for model_type, entries in value.items():
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise InvocationFailed(400, f"models.{model_type} must be a list")
            for entry in entries:
                if not isinstance(entry, dict):
                    raise InvocationFailed(400, f"models.{model_type} must hold objects")
                name = entry.get("model_name")
                if name is None or name in NO_MODEL:
                    listed.append({"type": model_type, "model_name": name or "", "skip": True})
                    continue
                if not isinstance(name, str):
                    raise InvocationFailed(400, f"models.{model_type}: model_name must be a string")
                if model_type not in MODEL_TYPES:
                    raise InvocationFailed(400, f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
                try:
                    check_model_name(name)
                except ModelError as error:
                    raise InvocationFailed(400, str(error)) from error
                listed.append({"type": model_type, "model_name": name, "url": entry.get("url"), "s3": entry.get("s3")})
        return listed

    def _payload(self, request: dict[str, Any]) -> dict[str, Any]:
        """The engine payload: `payload_string`, else the body at `param_url`, else the object at `param_s3`."""
        if request.get("payload_string") is not None:
            raw: Any = request["payload_string"]
            source = "payload_string"
        elif request.get("param_url"):
            source = "param_url"
            try:
                response = requests.get(request["param_url"], timeout=PAYLOAD_TIMEOUT_S)
            except requests.RequestException as error:
                raise InvocationFailed(400, f"could not read param_url: {error}") from error
            if not response.ok:
                raise InvocationFailed(400, f"could not read param_url: it answered {response.status_code}")
            raw = response.content
        elif request.get("param_s3"):
            source = "param_s3"
            raw = self._read_s3(str(request["param_s3"]))
        else:
            raise InvocationFailed(400, "no payload: give payload_string, param_url or param_s3")
        if isinstance(raw, dict):
            return raw
        try:
            payload = json.loads(raw)
        except (TypeError, ValueError) as error:
            raise InvocationFailed(400, f"{source} must be valid json string: {error}") from error
        if not isinstance(payload, dict):
            raise InvocationFailed(400, f"{source} must hold a JSON object, not {type(payload).__name__}")
        return payload

    def _read_s3(self, uri: str) -> bytes:
        try:
            bucket, key = parse_s3_uri(uri)
        except ModelError as error:
            raise InvocationFailed(400, f"param_s3: {error}") from error
        try:
            return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            raise InvocationFailed(400, f"could not read param_s3 {uri}: {error}") from error

    # --- models ---

    def _fetch_models(self, wanted: list[dict[str, Any]]) -> None:
        fetched_types = set()
        for model in wanted:
            try:
                if self.cache.ensure(model["type"], model["model_name"], url=model.get("url"), s3=model.get("s3")):
                    fetched_types.add(model["type"])
            except ModelError as error:
                raise InvocationFailed(400 if error.client_error else 502, str(error)) from error
        if fetched_types:
            routes = ["/sdapi/v1/refresh-checkpoints", "/sdapi/v1/refresh-loras"]
            if "VAE" in fetched_types:
                routes.append("/sdapi/v1/refresh-vae")
            for route in routes:
                self._refresh(route)

    def _refresh(self, route: str) -> None:
        try:
            response = self._http.post(f"{self.engine_url}{route}", timeout=120)
        except requests.RequestException as error:
            log.warning("engine refresh %s failed: %s", route, error)
            return
        if not response.ok and response.status_code != 404:
            log.warning("engine refresh %s answered %d", route, response.status_code)

    @staticmethod
    def _select_models(payload: dict[str, Any], models: list[dict[str, Any]]) -> None:
        """Point the engine at the listed checkpoint and VAE unless the payload already chose them."""
        checkpoint = next(
            (m["model_name"] for m in models if m["type"] == "Stable-diffusion" and not m.get("skip")), None
        )
        vae = next((m["model_name"] for m in models if m["type"] == "VAE" and m["model_name"]), None)
        overrides = payload.get("override_settings")
        if not isinstance(overrides, dict):
            overrides = {}
        if checkpoint:
            overrides.setdefault("sd_model_checkpoint", checkpoint)
        if checkpoint or vae:
            overrides.setdefault("sd_vae", vae or "Automatic")
        payload["override_settings"] = overrides
        # The worker owns which model is loaded: restoring the previous one after each job would reload weights.
        payload["override_settings_restore_afterwards"] = False

    # --- the engine ---

    def _call_engine(self, route: str, payload: dict[str, Any]) -> bytes:
        url = f"{self.engine_url}{route}"
        timeout = self.settings.engine_timeout_s
        try:
            response = self._http.post(url, json=payload, timeout=(min(10.0, timeout), timeout))
        except requests.Timeout as error:
            if isinstance(error, requests.ConnectTimeout):
                raise InvocationFailed(502, f"engine at {self.engine_url} not reachable: {error}") from error
            raise InvocationFailed(504, f"engine did not answer within {timeout:g} s") from error
        except requests.RequestException as error:
            raise InvocationFailed(502, f"engine at {self.engine_url} not reachable: {error}") from error
        if not response.ok:
            raise InvocationFailed(502, f"engine answered {response.status_code}: {_engine_error(response)}")
        try:
            body = response.json()
        except ValueError as error:
            raise InvocationFailed(502, f"engine answered {response.status_code} without JSON") from error
        if body is None:
            raise InvocationFailed(502, f"engine answered {response.status_code} with an empty result")
        return response.content


def _engine_error(response: requests.Response) -> str:
    """A1111's error text (`errors`, else `detail`, else `error`), else the body; at most 2000 characters."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("errors", "detail", "error"):
            if body.get(name):
                value = body[name]
                text = value if isinstance(value, str) else json.dumps(value)
                break
    return (text.strip() or "(no body)")[:ERROR_TEXT_LIMIT]


def create_worker_app(settings: WorkerSettings | None = None) -> FastAPI:
    """The worker's FastAPI app; settings from the environment when not given."""
    worker = Worker(settings or WorkerSettings.from_env())
    app = FastAPI(title="ESD endpoint worker")
    app.state.worker = worker

    @app.get("/ping")
    def ping() -> JSONResponse:
        healthy, reason = worker.ping()
        if healthy:
            return JSONResponse({"status": "Healthy"})
        return JSONResponse(status_code=503, content={"status": "Unhealthy", "reason": reason})

    @app.post("/invocations")
    async def invoke(request: Request) -> Response:
        raw = await request.body()
        try:
            parsed = json.loads(raw)
        except ValueError as error:
            return failed(400, f"the invocation body is not JSON: {error}")
        try:
            content = await run_in_threadpool(worker.invoke, parsed)
        except InvocationFailed as error:
            log.warning("invocation failed (%d): %s", error.status, error.message)
            return failed(error.status, error.message)
        except Exception as error:
            log.exception("invocation failed")
            return failed(500, f"worker error: {type(error).__name__}: {error}")
        return Response(status_code=200, content=content, media_type="application/json")

    return app
