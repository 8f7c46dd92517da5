"""Settings of the middleware, from environment variables (the CLI's flags set the same ones)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BACKENDS = ("embedded", "aws")
MiB = 1 << 20
# API Gateway's own limit on a request, so both backends refuse the same bodies
DEFAULT_MAX_BODY_BYTES = 10 * MiB
# each instance of a local endpoint is a worker process calling the one local engine
DEFAULT_LOCAL_MAX_INSTANCES = 4


class SettingsError(ValueError):
    """A setting with a value the middleware cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the middleware keeps its data and how it checks callers.

    Secrets (`api_key`, `admin_password`) are read from the environment only,
    never from flags, and never printed once stored.
    """

    backend: str = "embedded"
    data_dir: Path = Path("esd-data")
    api_key: str | None = field(default=None, repr=False)
    api_key_sha256: str | None = field(default=None, repr=False)
    admin_username: str = "admin"
    admin_password: str | None = field(default=None, repr=False)
    public_url: str | None = None
    bucket: str | None = None
    table_prefix: str = "esd-"
    region: str | None = None
    aws_endpoint_url: str | None = None
    engine_url: str = "http://127.0.0.1:7860"
    engine_timeout_s: float = 900.0
    endpoint_health_timeout_s: float = 120.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    local_max_instances: int = DEFAULT_LOCAL_MAX_INSTANCES
    task_function_name: str | None = None
    kohya_dir: Path | None = None
    kohya_python: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `ESD_*` variables; `overrides` (from flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "backend": env.get("ESD_BACKEND", "embedded"),
            "data_dir": Path(env.get("ESD_DATA_DIR", "esd-data")),
            "api_key": env.get("ESD_API_KEY") or None,
            "api_key_sha256": env.get("ESD_API_KEY_SHA256") or None,
            "admin_username": env.get("ESD_ADMIN_USERNAME", "admin"),
            "admin_password": env.get("ESD_ADMIN_PASSWORD") or None,
            "public_url": env.get("ESD_PUBLIC_URL") or None,
            "bucket": env.get("ESD_BUCKET") or None,
            "table_prefix": env.get("ESD_TABLE_PREFIX", "esd-"),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            "aws_endpoint_url": env.get("ESD_AWS_ENDPOINT_URL") or None,
            "engine_url": env.get("ESD_ENGINE_URL") or "http://127.0.0.1:7860",
            "engine_timeout_s": _number(env, "ESD_ENGINE_TIMEOUT_S", 900.0),
            "endpoint_health_timeout_s": _number(env, "ESD_ENDPOINT_HEALTH_TIMEOUT_S", 120.0),
            "max_body_bytes": _whole_number(env, "ESD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, "bytes"),
            "local_max_instances": _whole_number(
                env, "ESD_LOCAL_MAX_INSTANCES", DEFAULT_LOCAL_MAX_INSTANCES, "instances"
            ),
            "task_function_name": env.get("ESD_TASK_FUNCTION_NAME") or None,
            "kohya_dir": Path(env["ESD_KOHYA_DIR"]) if env.get("ESD_KOHYA_DIR") else None,
            "kohya_python": env.get("ESD_KOHYA_PYTHON") or None,
        }
        values.update({name: value for name, value in overrides.items() if value is not None})
        values["data_dir"] = Path(values["data_dir"])  # type: ignore[arg-type]
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingsError(f"ESD_BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "aws" and not self.bucket:
            raise SettingsError("ESD_BACKEND=aws needs ESD_BUCKET (the bucket for models, payloads and images)")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name) or default)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value


def _whole_number(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise SettingsError(f"{name} must be a positive whole number of {unit}, not {text!r}")
    return int(text)
