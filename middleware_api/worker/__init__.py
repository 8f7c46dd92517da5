"""The endpoint worker (SageMaker's inference-container contract over an A1111 engine) and an engine double.

Names load lazily, so `python -m middleware_api.worker.engine_double` needs neither requests nor boto3.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelCache", "WorkerSettings", "create_worker_app"]


def __getattr__(name: str) -> Any:
    if name in ("WorkerSettings", "create_worker_app"):
        from . import app

        return getattr(app, name)
    if name == "ModelCache":
        from .models import ModelCache

        return ModelCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
