"""`Background` in AWS: each task is an asynchronous invocation of the task Lambda function.

A thread would be frozen with the API function once its response is sent; an
`Event` invocation runs to completion in its own function (up to 15 minutes).
"""

from __future__ import annotations

import json
from typing import Any


class LambdaBackground:
    """Sends `{"task", "payload"}` to the task function (`middleware_api.lambda_handler.task_handler`)."""

    def __init__(self, client: Any, function_name: str) -> None:
        self.client = client
        self.function_name = function_name

    def submit(self, task: str, payload: dict[str, Any]) -> None:
        self.client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"task": task, "payload": payload}).encode(),
        )

    def close(self) -> None:
        """Nothing to stop: the invocations run elsewhere."""
