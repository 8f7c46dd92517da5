"""The `Background` port: work that must not hold up a request (downloads, slow jobs).

Tasks are named so that an adapter can send them across processes (in AWS, an
asynchronous Lambda invocation carries the name and the JSON payload).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

TaskHandler = Callable[[dict[str, Any]], None]


class Background(Protocol):
    """Runs named tasks later, outside the request."""

    def submit(self, task: str, payload: dict[str, Any]) -> None:
        """Queue `task` with a JSON-serialisable payload; returns at once."""

    def close(self) -> None:
        """Stop accepting tasks and wait for running ones."""
