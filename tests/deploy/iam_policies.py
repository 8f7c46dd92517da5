"""Which IAM actions an AWS call needs, on which resource, and whether a role's statements allow it.

One small explicit table (`ACTIONS`) holds the calls whose IAM actions are not simply
`prefix:Operation`; `required()` turns a call (service, API operation, parameters) into
`(action, resource ARN)` pairs, and `allows()` evaluates Allow/Deny statements with IAM's
wildcards. Conditions are not evaluated: the template's few conditions only narrow
`iam:PassRole` and `iam:CreateServiceLinkedRole` to the intended service.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

PREFIXES = {
    "s3": "s3",
    "dynamodb": "dynamodb",
    "sagemaker": "sagemaker",
    "sagemaker-runtime": "sagemaker",
    "application-autoscaling": "application-autoscaling",
    "cloudwatch": "cloudwatch",
    "lambda": "lambda",
}
_AUTOSCALING_ROLE = (
    "arn:aws:iam::{account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
# (service, API operation) -> IAM actions, where not "prefix:Operation"
ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    # S3 answers 403 instead of 404 for a missing key without s3:ListBucket; the code relies on 404
    ("s3", "GetObject"): ("s3:GetObject", "s3:ListBucket"),
    ("s3", "HeadObject"): ("s3:GetObject", "s3:ListBucket"),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
    ("s3", "ListParts"): ("s3:ListMultipartUploadParts",),
    ("s3", "ListMultipartUploads"): ("s3:ListBucketMultipartUploads",),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("s3", "CopyObject"): ("s3:GetObject", "s3:PutObject"),
    ("s3", "UploadPartCopy"): ("s3:GetObject", "s3:PutObject"),
    ("lambda", "Invoke"): ("lambda:InvokeFunction",),
    # calls that also need rights on what they hand over or act on
    ("sagemaker", "CreateModel"): ("sagemaker:CreateModel", "iam:PassRole"),
    ("sagemaker", "CreateTrainingJob"): ("sagemaker:CreateTrainingJob", "iam:PassRole", "sagemaker:AddTags"),
    ("application-autoscaling", "RegisterScalableTarget"): (
        "application-autoscaling:RegisterScalableTarget",
        "sagemaker:DescribeEndpoint",
        "sagemaker:UpdateEndpointWeightsAndCapacities",
        "iam:CreateServiceLinkedRole",
    ),
}
# boto3's managed transfers (client methods, not API operations) -> the operations they may make
TRANSFERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "upload_fileobj"): (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
    ("s3", "copy"): (
        "HeadObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
}
_BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}


@dataclass(frozen=True)
class Place:
    """The region and account ARNs are built in."""

    region: str = "us-east-1"
    account: str = "123456789012"


@cache
def operation_name(service: str, method: str) -> str:
    """The API operation of a boto3 client method (`list_objects_v2` -> `ListObjectsV2`); KeyError if none."""
    import boto3

    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client.meta.method_to_api_mapping[method]


def required(service: str, operation: str, params: Mapping[str, Any], place: Place) -> list[tuple[str, str]]:
    """`(IAM action, resource ARN)` pairs one API call needs."""
    actions = ACTIONS.get((service, operation), (f"{PREFIXES[service]}:{operation}",))
    return [(action, resource_of(action, params, place)) for action in actions]


def resource_of(action: str, params: Mapping[str, Any], place: Place) -> str:
    arn = f"arn:aws:{{}}:{place.region}:{place.account}:"
    service = action.split(":", 1)[0]
    if service == "dynamodb":
        index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
        return arn.format("dynamodb") + f"table/{params['TableName']}{index}"
    if service == "s3":
        if action in _BUCKET_LEVEL:
            return f"arn:aws:s3:::{params['Bucket']}"
        return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
    if action == "iam:PassRole":
        return str(params.get("ExecutionRoleArn") or params["RoleArn"])
    if action == "iam:CreateServiceLinkedRole":
        return _AUTOSCALING_ROLE.format(account=place.account)
    if service == "sagemaker":
        if action == "sagemaker:AddTags":  # tags on create: only training jobs are created with tags
            return arn.format("sagemaker") + f"training-job/{params['TrainingJobName'].lower()}"
        for noun, name in (("EndpointConfig", "endpoint-config"), ("Model", "model"), ("TrainingJob", "training-job")):
            if action.endswith(noun):
                return arn.format("sagemaker") + f"{name}/{params[noun + 'Name'].lower()}"
        endpoint = params.get("EndpointName") or str(params["ResourceId"]).split("/")[1]
        return arn.format("sagemaker") + f"endpoint/{endpoint.lower()}"
    if service == "cloudwatch":
        return arn.format("cloudwatch") + f"alarm:{params.get('AlarmName') or params['AlarmNames'][0]}"
    if service == "lambda":
        name = str(params["FunctionName"])
        return name if name.startswith("arn:") else arn.format("lambda") + f"function:{name}"
    if service == "application-autoscaling":
        return arn.format("application-autoscaling") + "scalable-target/*"
    raise ValueError(f"no resource rule for {action}")


def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in text)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _applies(statement: Mapping[str, Any], action: str, resource: str) -> bool:
    actions = _listed(statement.get("Action", []))
    resources = _listed(statement.get("Resource", []))
    return any(_pattern(pattern, True).fullmatch(action) for pattern in actions) and any(
        _pattern(pattern, False).fullmatch(resource) for pattern in resources
    )


def allows(statements: Iterable[Mapping[str, Any]], action: str, resource: str) -> bool:
    """True when an Allow statement covers the action on the resource and no Deny does."""
    statements = list(statements)
    denied = any(s.get("Effect") == "Deny" and _applies(s, action, resource) for s in statements)
    return not denied and any(s.get("Effect") == "Allow" and _applies(s, action, resource) for s in statements)


def statements_of(documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every statement of some policy documents."""
    return [dict(statement) for document in documents for statement in _listed(document.get("Statement", []))]
