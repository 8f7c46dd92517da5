"""`Background` on a thread pool inside the server process."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from middleware_api.ports.background import TaskHandler

log = logging.getLogger("middleware_api.background")


class ThreadBackground:
    """Runs tasks on a few threads; a failing task is logged, never lost silently."""

    def __init__(self, handlers: Mapping[str, TaskHandler], workers: int = 4) -> None:
        self.handlers = handlers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esd-task")

    def submit(self, task: str, payload: dict[str, Any]) -> None:
        handler = self.handlers[task]
        self._pool.submit(self._run, task, handler, payload)

    @staticmethod
    def _run(task: str, handler: TaskHandler, payload: dict[str, Any]) -> None:
        try:
            handler(payload)
        except Exception:  # the handler records failures on its item; this is the last resort
            log.exception("background task %s failed", task)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
