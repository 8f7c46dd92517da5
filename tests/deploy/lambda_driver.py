"""A stand-in for the Lambda runtime's loop: imports the handlers from the extracted zip, then answers
JSON lines on stdin (`{"entry": "handler", "event": {...}}`) with JSON lines on stdout.

Run by `lambda_runtime.LambdaProcess` with `python -S` and `PYTHONPATH` = the zip's folder and a
folder with boto3 only (what Lambda's runtime adds), so nothing else of the test environment is
importable. Every AWS call the handlers make (and every URL they presign) is recorded and returned
with the answer, for the IAM check. Standard library only: it must not import anything the zip lacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from typing import Any

sys.path.pop(0)  # this script's folder (tests/deploy) is no part of a Lambda function

RECORDED_PARAMETERS = (
    "TableName",
    "IndexName",
    "Bucket",
    "Key",
    "ModelName",
    "EndpointConfigName",
    "EndpointName",
    "ExecutionRoleArn",
    "RoleArn",
    "TrainingJobName",
    "FunctionName",
    "AlarmName",
    "AlarmNames",
    "ResourceId",
    "InputLocation",
)
calls: list[dict[str, Any]] = []


def _record(service: str, operation: str, params: dict[str, Any], presigned: bool = False) -> None:
    kept = {name: params[name] for name in RECORDED_PARAMETERS if name in params}
    calls.append({"service": service, "operation": operation, "params": kept, "presigned": presigned})


def _install_recorder() -> None:
    import botocore.client
    import botocore.signers

    make_api_call = botocore.client.BaseClient._make_api_call
    presign = botocore.signers.generate_presigned_url

    def recorded_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        _record(self.meta.service_model.service_name, operation_name, api_params)
        return make_api_call(self, operation_name, api_params)

    def recorded_presign(self: Any, ClientMethod: str, Params: Any = None, *args: Any, **kwargs: Any) -> Any:  # noqa: N803
        operation = self.meta.method_to_api_mapping.get(ClientMethod, ClientMethod)
        _record(self.meta.service_model.service_name, operation, dict(Params or {}), presigned=True)
        return presign(self, ClientMethod, Params, *args, **kwargs)

    botocore.client.BaseClient._make_api_call = recorded_call  # type: ignore[method-assign]
    botocore.signers.generate_presigned_url = recorded_presign  # type: ignore[assignment]


class Context:
    """The parts of Lambda's context object a handler may read."""

    function_name = "driver"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def _where(names: list[str]) -> dict[str, str | None]:
    found = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        found[name] = spec.origin if spec else None
    return found


def main() -> None:
    _install_recorder()
    handlers = importlib.import_module("middleware_api.lambda_handler")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        calls.clear()
        try:
            if request["entry"] == "__where__":
                result: Any = _where(request["event"])
            else:
                result = getattr(handlers, request["entry"])(request["event"], Context())
            answer = {"ok": True, "result": result, "calls": calls}
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc(), "calls": calls}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
