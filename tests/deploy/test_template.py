"""The CloudFormation template: cfn-lint clean, in step with the code (tables from `schema.ALL_TABLES`,
environment variables the settings read, handlers that exist), and least-privilege IAM that still
allows every AWS call the code makes (found by reading the adapters' source with `ast`)."""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iam_policies import TRANSFERS, Place, allows, operation_name, required, statements_of

import middleware_api.lambda_handler as lambda_handler
from middleware_api import schema
from middleware_api.adapters.aws import compute
from middleware_api.adapters.aws.tables import table_definition
from middleware_api.deploy.package import LAMBDA_PYTHON, ROOT

TEMPLATE = ROOT / "middleware_api" / "deploy" / "template.yaml"
STACK = "esd"
PLACE = Place()
SAMPLE_IMAGE = f"{PLACE.account}.dkr.ecr.{PLACE.region}.amazonaws.com/esd-inference:1.5.0"

# -- the template, with its intrinsic functions resolved to sample values ------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


class Resolver:
    """Ref, Fn::GetAtt, Fn::Sub and Fn::Join of the template, resolved as a stack named `esd` would."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.resources = template["Resources"]
        self.pseudo = {
            "AWS::Region": PLACE.region,
            "AWS::AccountId": PLACE.account,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.parameters = {"ApiKeyValue": "k" * 24, "InferenceImageUri": SAMPLE_IMAGE}

    def __call__(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self.ref(value)
            if key == "Fn::GetAtt":
                logical, attribute = value if isinstance(value, list) else value.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else value
                return re.sub(
                    r"\$\{([^}!]+)\}",
                    lambda match: self(variables[match[1]]) if match[1] in variables else self.lookup(match[1]),
                    text,
                )
            if key == "Fn::Join":
                separator, parts = value
                return separator.join(str(self(part)) for part in parts)
        if isinstance(node, dict):
            return {key: self(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self(item) for item in node]
        return node

    def lookup(self, name: str) -> str:
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self.get_att(logical, attribute)
        return self.ref(name)

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.parameters.get(name) or str(self.template["Parameters"][name].get("Default", name))
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            return f"{STACK}-bucket-sample"
        if kind == "AWS::Lambda::Function":
            return self(properties["FunctionName"])
        if kind == "AWS::DynamoDB::Table":
            return self(properties["TableName"])
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{PLACE.region}:{PLACE.account}:{self(properties['TopicName'])}"
        return name

    def get_att(self, logical: str, attribute: str) -> str:
        kind = self.resources[logical]["Type"]
        name = self.ref(logical)
        arns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{PLACE.region}:{PLACE.account}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{PLACE.account}:role/{STACK}-{logical}-SAMPLE",
            "AWS::Lambda::Function": f"arn:aws:lambda:{PLACE.region}:{PLACE.account}:function:{name}",
            "AWS::Events::Rule": f"arn:aws:events:{PLACE.region}:{PLACE.account}:rule/{logical}",
        }
        if attribute == "Arn":
            return arns[kind]
        return f"{logical}.{attribute}"


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for name, body in template["Resources"].items() if body["Type"] == kind}


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """The statements of a role's inline policies and of the policies that name it, resolved."""
    resolve = Resolver(template)
    documents = [policy["PolicyDocument"] for policy in template["Resources"][role]["Properties"].get("Policies", [])]
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in resources_of_type(template, kind).values():
            if {"Ref": role} in policy["Properties"].get("Roles", []):
                documents.append(policy["Properties"]["PolicyDocument"])
    return statements_of(resolve(documents))


def role_of(template: dict[str, Any], function: str) -> str:
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"]
    return role[0] if isinstance(role, list) else role.split(".")[0]


# -- cfn-lint ---------------------------------------------------------------------------------------


def test_cfn_lint_finds_no_errors() -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1", "eu-west-1", "ap-northeast-1"]))
    errors = [match for match in matches if match.rule.id.startswith("E")]
    for match in matches:
        if not match.rule.id.startswith("E"):
            warnings.warn(f"cfn-lint {match.rule.id} line {match.linenumber}: {match.message}", stacklevel=1)
    assert not errors, "\n".join(f"{match.rule.id} line {match.linenumber}: {match.message}" for match in errors)


# -- in step with the code --------------------------------------------------------------------------


def _sorted(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted((dict(item) for item in items), key=lambda item: item[key])


def test_tables_are_those_of_the_schema(template: dict[str, Any]) -> None:
    tables = resources_of_type(template, "AWS::DynamoDB::Table")
    by_name = {body["Properties"]["TableName"]["Fn::Sub"]: (logical, body) for logical, body in tables.items()}
    expected_names = {"${TablePrefix}" + spec.name for spec in schema.ALL_TABLES}
    assert set(by_name) == expected_names, "the template's tables differ from schema.ALL_TABLES"
    for spec in schema.ALL_TABLES:
        logical, body = by_name["${TablePrefix}" + spec.name]
        expected = table_definition(spec, "${TablePrefix}" + spec.name)
        properties = body["Properties"]
        assert properties["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST", logical
        assert [dict(key) for key in properties["KeySchema"]] == expected["KeySchema"], logical
        assert _sorted(properties["AttributeDefinitions"], "AttributeName") == _sorted(
            expected["AttributeDefinitions"], "AttributeName"
        ), logical
        indexes = [
            {**index, "KeySchema": [dict(key) for key in index["KeySchema"]], "Projection": dict(index["Projection"])}
            for index in properties.get("GlobalSecondaryIndexes", [])
        ]
        assert _sorted(indexes, "IndexName") == _sorted(expected.get("GlobalSecondaryIndexes", []), "IndexName"), (
            logical
        )
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical
        assert properties["SSESpecification"] == {"SSEEnabled": True}, logical
        assert body.get("DeletionPolicy") == "Retain" and body.get("UpdateReplacePolicy") == "Retain", logical


def test_functions_run_the_handlers_with_the_settings_the_code_reads(template: dict[str, Any]) -> None:
    functions = resources_of_type(template, "AWS::Lambda::Function")
    handlers = {body["Properties"]["Handler"]: name for name, body in functions.items()}
    assert set(handlers) == {
        f"middleware_api.lambda_handler.{entry}"
        for entry in ("handler", "events_handler", "task_handler", "authorizer_handler")
    }
    sagemaker_variables = set(compute._ENV_VARIABLES.values())
    for name, body in functions.items():
        properties = body["Properties"]
        assert callable(getattr(lambda_handler, properties["Handler"].rsplit(".", 1)[1])), name
        assert properties["Runtime"] == f"python{LAMBDA_PYTHON}", name
        assert properties["Architectures"] == ["x86_64"], name  # the zip's wheels are manylinux x86_64
        assert properties["Code"] == {"S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"}}, name
        variables = properties["Environment"]["Variables"]
        assert variables["ESD_BACKEND"] == "aws", name
        assert variables["ESD_BUCKET"] == {"Ref": "Bucket"}, name
        assert variables["ESD_TABLE_PREFIX"] == {"Ref": "TablePrefix"}, name
        assert sagemaker_variables <= set(variables), f"{name} lacks {sagemaker_variables - set(variables)}"
        assert "AWS_REGION" not in variables, "Lambda sets AWS_REGION itself (a reserved name)"
    api = functions[handlers["middleware_api.lambda_handler.handler"]]["Properties"]
    tasks_name = handlers["middleware_api.lambda_handler.task_handler"]
    tasks = functions[tasks_name]["Properties"]
    authorizer_name = handlers["middleware_api.lambda_handler.authorizer_handler"]
    authorizer = functions[authorizer_name]["Properties"]
    for properties in (api, authorizer):  # both admit the deployment key (ApiKeyGate, authorizer_handler)
        assert properties["Environment"]["Variables"]["ESD_API_KEY"] == {"Ref": "ApiKeyValue"}
    assert "ESD_TASK_FUNCTION_NAME" not in authorizer["Environment"]["Variables"]  # it only reads
    for properties in (api, tasks):  # they start training jobs (`adapters/aws/training.py`)
        assert properties["Environment"]["Variables"]["ESD_TRAINING_IMAGE_URI"] == {"Ref": "TrainingImageUri"}
    assert api["Environment"]["Variables"]["ESD_TASK_FUNCTION_NAME"] == {"Ref": tasks_name}
    resolve = Resolver(template)
    assert resolve(tasks["Environment"]["Variables"]["ESD_TASK_FUNCTION_NAME"]) == resolve(tasks["FunctionName"])
    assert tasks["Timeout"] == 900
    for name, body in functions.items():
        if name not in (handlers["middleware_api.lambda_handler.handler"], authorizer_name):
            assert "ESD_API_KEY" not in body["Properties"]["Environment"]["Variables"], name
    # the events function builds the topic ARNs (a Ref would be circular): they must be the topics' ARNs
    topics = {resolve({"Ref": name}) for name in resources_of_type(template, "AWS::SNS::Topic")}
    for body in functions.values():
        variables = resolve(body["Properties"]["Environment"]["Variables"])
        assert {variables["ESD_SNS_SUCCESS_TOPIC_ARN"], variables["ESD_SNS_ERROR_TOPIC_ARN"]} == topics


def test_api_gateway_sends_every_path_to_the_api_function_behind_the_key(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["ApiKeyValue"]
    assert parameter["NoEcho"] is True and parameter["MinLength"] == 20 and "Default" not in parameter
    methods = resources_of_type(template, "AWS::ApiGateway::Method")
    resources = resources_of_type(template, "AWS::ApiGateway::Resource")
    proxy = [name for name, body in resources.items() if body["Properties"]["PathPart"] == "{proxy+}"]
    assert len(proxy) == 1
    on = {str(body["Properties"]["ResourceId"]): body["Properties"] for body in methods.values()}
    assert set(on) == {str({"Ref": proxy[0]}), str({"Fn::GetAtt": ["RestApi", "RootResourceId"]})}
    (authorizer_name, authorizer) = next(iter(resources_of_type(template, "AWS::ApiGateway::Authorizer").items()))
    assert len(resources_of_type(template, "AWS::ApiGateway::Authorizer")) == 1
    for properties in on.values():
        assert properties["HttpMethod"] == "ANY" and properties["ApiKeyRequired"] is True
        assert properties["AuthorizationType"] == "CUSTOM" and properties["AuthorizerId"] == {"Ref": authorizer_name}
        assert properties["Integration"]["Type"] == "AWS_PROXY"
        assert "${ApiFunction.Arn}" in properties["Integration"]["Uri"]["Fn::Sub"]
    # the authorizer admits personal access tokens and names the usage plan's key for every caller
    (rest_api,) = resources_of_type(template, "AWS::ApiGateway::RestApi").values()
    assert rest_api["Properties"]["ApiKeySourceType"] == "AUTHORIZER"
    properties = authorizer["Properties"]
    assert properties["Type"] == "REQUEST" and properties["RestApiId"] == {"Ref": "RestApi"}
    assert properties["IdentitySource"] == f"method.request.header.{lambda_handler.API_KEY_HEADER}"
    assert 0 <= properties["AuthorizerResultTtlInSeconds"] <= 300  # the API function checks tokens again
    assert "${AuthorizerFunction.Arn}" in properties["AuthorizerUri"]["Fn::Sub"]
    assert (
        template["Resources"]["AuthorizerFunction"]["Properties"]["Handler"]
        == "middleware_api.lambda_handler.authorizer_handler"
    )
    # its refusals answer as the API function's: 403 {"message": "Forbidden"}
    responses = resources_of_type(template, "AWS::ApiGateway::GatewayResponse")
    by_type = {body["Properties"]["ResponseType"]: body["Properties"] for body in responses.values()}
    assert set(by_type) == {"UNAUTHORIZED", "ACCESS_DENIED"}
    for response in by_type.values():
        assert response["StatusCode"] == "403"
        assert json.loads(response["ResponseTemplates"]["application/json"]) == {"message": "Forbidden"}
    (deployment,) = resources_of_type(template, "AWS::ApiGateway::Deployment").values()
    assert deployment["Properties"]["StageName"] == "prod"
    assert set(responses) <= set(deployment["DependsOn"]), "gateway responses take effect with a deployment"
    (plan,) = resources_of_type(template, "AWS::ApiGateway::UsagePlan").values()
    assert [dict(stage) for stage in plan["Properties"]["ApiStages"]] == [
        {"ApiId": {"Ref": "RestApi"}, "Stage": "prod"}
    ]
    (key,) = resources_of_type(template, "AWS::ApiGateway::ApiKey").values()
    assert key["Properties"]["Value"] == {"Ref": "ApiKeyValue"}
    assert resources_of_type(template, "AWS::ApiGateway::UsagePlanKey")
    outputs = template["Outputs"]
    url = Resolver(template)(outputs["ApiUrl"]["Value"])
    assert url == f"https://RestApi.execute-api.{PLACE.region}.amazonaws.com/prod/"
    assert {"ApiUrl", "BucketName", "ApiKeyId"} <= set(outputs)


def test_events_reach_the_events_function(template: dict[str, Any]) -> None:
    (rule,) = resources_of_type(template, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.sagemaker"]
    assert lambda_handler.ENDPOINT_STATE_CHANGE in pattern["detail-type"]
    assert "SageMaker Training Job State Change" in pattern["detail-type"]
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["EventsFunction", "Arn"]}
    for topic in resources_of_type(template, "AWS::SNS::Topic").values():
        subscription = topic["Properties"]["Subscription"]
        assert [dict(item) for item in subscription] == [
            {"Protocol": "lambda", "Endpoint": {"Fn::GetAtt": ["EventsFunction", "Arn"]}}
        ]
    permissions = [body["Properties"] for body in resources_of_type(template, "AWS::Lambda::Permission").values()]
    principals = {(str(p["FunctionName"]), p["Principal"]) for p in permissions}
    events = str({"Fn::GetAtt": ["EventsFunction", "Arn"]})
    api = str({"Fn::GetAtt": ["ApiFunction", "Arn"]})
    authorizer = str({"Fn::GetAtt": ["AuthorizerFunction", "Arn"]})
    assert principals == {
        (events, "sns.amazonaws.com"),
        (events, "events.amazonaws.com"),
        (api, "apigateway.amazonaws.com"),
        (authorizer, "apigateway.amazonaws.com"),
    }
    (authorizer_permission,) = [p for p in permissions if str(p["FunctionName"]) == authorizer]
    assert Resolver(template)(authorizer_permission["SourceArn"]) == (
        f"arn:aws:execute-api:{PLACE.region}:{PLACE.account}:RestApi/authorizers/ApiKeyAuthorizer"
    )
    assert sum(p["Principal"] == "sns.amazonaws.com" for p in permissions) == 2  # one per topic


def test_bucket_is_private_encrypted_retained_and_open_to_presigned_uploads(template: dict[str, Any]) -> None:
    (bucket,) = resources_of_type(template, "AWS::S3::Bucket").values()
    assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    assert (
        all(properties["PublicAccessBlockConfiguration"].values())
        and len(properties["PublicAccessBlockConfiguration"]) == 4
    )
    (encryption,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (cors,) = properties["CorsConfiguration"]["CorsRules"]
    assert set(cors["AllowedMethods"]) == {"PUT", "GET", "HEAD"} and cors["AllowedOrigins"] == ["*"]
    assert cors["ExposedHeaders"] == ["ETag"]
    rules = properties["LifecycleConfiguration"]["Rules"]
    assert any(rule.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 7} for rule in rules)


# -- IAM: every boto3 call of the code is allowed to the function that makes it --------------------

AWS_SOURCES = sorted((ROOT / "middleware_api" / "adapters" / "aws").glob("*.py")) + [
    ROOT / "middleware_api" / "lambda_handler.py"
]
# the names that hold boto3 clients -> their service: in every module, and per module for `client`
CLIENT_NAMES = {
    "sagemaker": "sagemaker",
    "runtime": "sagemaker-runtime",
    "autoscaling": "application-autoscaling",
    "cloudwatch": "cloudwatch",
}
MODULE_CLIENTS = {
    "__init__.py": {},
    "background.py": {"client": "lambda"},
    "blobs.py": {"client": "s3"},
    "compute.py": {},
    "tables.py": {"client": "dynamodb"},
    "training.py": {},
    "lambda_handler.py": {},
}
# helpers called with an operation's name: `self._call("get_item", …)`, `self._presign("put_object", …)`
OPERATION_HELPERS = {"_call": None, "_presign": None, "get_paginator": "receiver"}
MODULE_SERVICE = {"blobs.py": "s3", "tables.py": "dynamodb"}
NOT_OPERATIONS = {"generate_presigned_url", "get_waiter"}
# functions no Lambda calls: the stack makes the tables (create_tables serves tests and local setups)
NOT_IN_LAMBDA = {"create_tables"}
# what the events path runs (EventService on the aws adapters): endpoint states, async results, and
# training states (a completed job's outputs are listed and copied into its checkpoint, or removed
# again). Checked to exist, so a rename fails here.
EVENTS_PATH = {
    "S3Blobs.read_location",
    "S3Blobs.put",
    "S3Blobs._pages",
    "S3Blobs.copy",
    "S3Blobs.delete_prefix",
    "S3Blobs.abort_multipart",
    "SageMakerCompute.in_service",
    "SageMakerCompute._register_autoscaling",
    "DynamoTable.get",
    "DynamoTable.put",
    "DynamoTable.update",
    "DynamoTable.query",
}
# what the authorizer runs (`authorizer_handler`: TokenService.actor_for on the aws adapters): the
# token's record, its user and the user's roles, all in the users table. No writes: its services are
# built without the start (the default roles); tests/deploy/test_stack_on_moto.py checks the calls it
# really makes against its role.
AUTHORIZER_PATH = {"DynamoTable.get"}
AUTHORIZER_TABLES = (schema.USERS,)
# default roles at cold start, endpoint states, async results, training states and their checkpoints
EVENTS_TABLES = (schema.USERS, schema.ENDPOINTS, schema.INFERENCES, schema.TRAININGS, schema.CHECKPOINTS)


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    yield f"{node.name}.{item.name}", item
        elif isinstance(node, ast.FunctionDef):
            yield node.name, node


def boto3_calls() -> tuple[set[tuple[str, str, str]], set[str]]:
    """`{(function, service, client method)}` of every boto3 call in the aws adapters and the Lambda entries,
    and the names of the functions defined there."""
    calls: set[tuple[str, str, str]] = set()
    defined: set[str] = set()
    for source in AWS_SOURCES:
        names = {**CLIENT_NAMES, **MODULE_CLIENTS.get(source.name, {})}
        for qualname, function in _functions(ast.parse(source.read_text())):
            defined.add(qualname)
            if function.name in NOT_IN_LAMBDA:
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                method, receiver = node.func.attr, _receiver_name(node.func.value)
                first = node.args[0] if node.args else None
                if method in OPERATION_HELPERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    service = names.get(receiver or "") if OPERATION_HELPERS[method] else MODULE_SERVICE[source.name]
                    if service:
                        calls.add((qualname, service, first.value))
                elif receiver in names and method not in NOT_OPERATIONS | set(OPERATION_HELPERS):
                    calls.add((qualname, names[receiver], method))
    return calls, defined


def operations(calls: set[tuple[str, str, str]]) -> set[tuple[str, str]]:
    """`{(service, API operation)}` of client method calls (managed transfers expanded)."""
    found = set()
    for _, service, method in calls:
        if (service, method) in TRANSFERS:
            found.update((service, operation) for operation in TRANSFERS[(service, method)])
        else:
            found.add((service, operation_name(service, method)))
    return found


def needed(template: dict[str, Any], ops: set[tuple[str, str]], tables: tuple[Any, ...]) -> set[tuple[str, str]]:
    """`(action, resource)` pairs the operations need, on sample resources of the stack."""
    resolve = Resolver(template)
    endpoint = "esd-async-demo"
    sample = {
        "Bucket": resolve({"Ref": "Bucket"}),
        "Key": "out/job/result/image_0.png",
        "ModelName": endpoint,
        "EndpointConfigName": endpoint,
        "EndpointName": endpoint,
        "ResourceId": f"endpoint/{endpoint}/variant/{compute.VARIANT}",
        "AlarmName": compute.backlog_alarm_name(endpoint),
        "ExecutionRoleArn": resolve({"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}),
        "FunctionName": resolve({"Ref": "TaskFunction"}),
        "TrainingJobName": "esd-kohya-demo",
        "RoleArn": resolve({"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}),
    }
    pairs = set()
    for service, operation in ops:
        if service != "dynamodb":
            pairs.update(required(service, operation, sample, PLACE))
            continue
        for spec in tables:
            table = resolve({"Fn::Sub": "${TablePrefix}" + spec.name})
            pairs.update(required(service, operation, {"TableName": table}, PLACE))
            if operation == "Query":
                for index in spec.indexes:
                    pairs.update(required(service, operation, {"TableName": table, "IndexName": index.name}, PLACE))
    return pairs


def test_every_aws_module_is_scanned() -> None:
    """A new module in adapters/aws must say which of its names hold which client (MODULE_CLIENTS)."""
    assert {source.name for source in AWS_SOURCES} <= set(MODULE_CLIENTS)


def test_the_source_scan_finds_the_calls() -> None:
    calls, defined = boto3_calls()
    ops = operations(calls)
    for expected in [
        ("s3", "PutObject"),
        ("s3", "UploadPart"),
        ("dynamodb", "Query"),
        ("dynamodb", "UpdateItem"),
        ("sagemaker", "CreateEndpoint"),
        ("sagemaker-runtime", "InvokeEndpointAsync"),
        ("application-autoscaling", "RegisterScalableTarget"),
        ("cloudwatch", "PutMetricAlarm"),
        ("lambda", "Invoke"),
    ]:
        assert expected in ops, f"the scan missed {expected}: {sorted(ops)}"
    assert defined >= EVENTS_PATH, f"renamed? {EVENTS_PATH - defined}"
    assert defined >= AUTHORIZER_PATH, f"renamed? {AUTHORIZER_PATH - defined}"
    assert "authorizer_handler" in defined


@pytest.mark.parametrize("function", ["ApiFunction", "TaskFunction"])
def test_api_and_task_functions_may_make_every_call_of_the_code(template: dict[str, Any], function: str) -> None:
    calls, _ = boto3_calls()
    statements = role_statements(template, role_of(template, function))
    missing = sorted(
        pair for pair in needed(template, operations(calls), schema.ALL_TABLES) if not allows(statements, *pair)
    )
    assert not missing, f"{function}'s role lacks:\n" + "\n".join(
        f"  {action} on {resource}" for action, resource in missing
    )


def test_events_function_may_make_the_calls_of_the_events_path(template: dict[str, Any]) -> None:
    calls, _ = boto3_calls()
    events_calls = {call for call in calls if call[0] in EVENTS_PATH}
    statements = role_statements(template, role_of(template, "EventsFunction"))
    missing = sorted(
        pair for pair in needed(template, operations(events_calls), EVENTS_TABLES) if not allows(statements, *pair)
    )
    assert not missing, "EventsFunction's role lacks:\n" + "\n".join(
        f"  {action} on {resource}" for action, resource in missing
    )


def test_authorizer_function_may_read_the_users_table_and_nothing_more(template: dict[str, Any]) -> None:
    calls, _ = boto3_calls()
    authorizer_calls = {call for call in calls if call[0] in AUTHORIZER_PATH}
    assert {(service, method) for _, service, method in authorizer_calls} == {("dynamodb", "get_item")}
    statements = role_statements(template, role_of(template, "AuthorizerFunction"))
    missing = sorted(
        pair
        for pair in needed(template, operations(authorizer_calls), AUTHORIZER_TABLES)
        if not allows(statements, *pair)
    )
    assert not missing, "AuthorizerFunction's role lacks:\n" + "\n".join(
        f"  {action} on {resource}" for action, resource in missing
    )
    resolve = Resolver(template)
    users = resolve({"Fn::GetAtt": ["UsersTable", "Arn"]})
    logs = f"arn:aws:logs:{PLACE.region}:{PLACE.account}:log-group:/aws/lambda/{STACK}-"
    assert allows(statements, "logs:PutLogEvents", logs + "authorizer:log-stream:x")
    assert not allows(statements, "logs:PutLogEvents", logs + "api:log-stream:x")
    for action, resource in [
        ("dynamodb:PutItem", users),
        ("dynamodb:UpdateItem", users),
        ("dynamodb:DeleteItem", users),
        ("dynamodb:Query", users + "/index/by_owner"),
        ("dynamodb:GetItem", resolve({"Fn::GetAtt": ["CheckpointsTable", "Arn"]})),
        ("s3:GetObject", resolve({"Fn::Sub": "${Bucket.Arn}/x"})),
        ("lambda:InvokeFunction", f"arn:aws:lambda:{PLACE.region}:{PLACE.account}:function:{STACK}-tasks"),
    ]:
        assert not allows(statements, action, resource), f"the authorizer role need not {action} on {resource}"


# -- IAM: and nothing much more ---------------------------------------------------------------------

# actions that have no resource-level permissions, so only "*" works
RESOURCE_STAR_ACTIONS = re.compile(r"ecr:GetAuthorizationToken|cloudwatch:PutMetricData|application-autoscaling:\w+")


def test_no_role_allows_wildcard_actions_or_needless_wildcard_resources(template: dict[str, Any]) -> None:
    for role in resources_of_type(template, "AWS::IAM::Role"):
        for statement in role_statements(template, role):
            if statement["Effect"] != "Allow":
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in actions:
                assert "*" not in action, f"{role}: wildcard action {action}"
                if "*" in resources:
                    assert RESOURCE_STAR_ACTIONS.fullmatch(action), f"{role}: {action} on every resource"


def test_roles_pass_and_invoke_only_what_they_must(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    api = role_statements(template, role_of(template, "ApiFunction"))
    events = role_statements(template, role_of(template, "EventsFunction"))
    sagemaker_role = resolve({"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]})
    other_role = f"arn:aws:iam::{PLACE.account}:role/Administrator"
    function_arn = f"arn:aws:lambda:{PLACE.region}:{PLACE.account}:function:"
    assert role_of(template, "TaskFunction") == role_of(template, "ApiFunction")  # shared; see the template
    assert allows(api, "iam:PassRole", sagemaker_role) and not allows(api, "iam:PassRole", other_role)
    assert allows(api, "lambda:InvokeFunction", function_arn + resolve({"Ref": "TaskFunction"}))
    assert not allows(api, "lambda:InvokeFunction", function_arn + resolve({"Ref": "ApiFunction"}))
    assert not allows(
        api, "sagemaker:CreateEndpoint", f"arn:aws:sagemaker:{PLACE.region}:{PLACE.account}:endpoint/other"
    )
    endpoint = f"arn:aws:sagemaker:{PLACE.region}:{PLACE.account}:endpoint/esd-async-demo"
    for action, resource in [
        ("iam:PassRole", sagemaker_role),
        ("sagemaker:CreateEndpoint", endpoint),
        ("sagemaker:InvokeEndpoint", endpoint),
        ("lambda:InvokeFunction", function_arn + resolve({"Ref": "TaskFunction"})),
        ("sagemaker:CreateTrainingJob", f"arn:aws:sagemaker:{PLACE.region}:{PLACE.account}:training-job/esd-kohya-x"),
        ("dynamodb:DeleteItem", resolve({"Fn::GetAtt": ["UsersTable", "Arn"]})),
        ("dynamodb:GetItem", resolve({"Fn::GetAtt": ["DatasetsTable", "Arn"]})),
    ]:
        assert not allows(events, action, resource), f"the events role need not {action} on {resource}"


def test_sagemaker_role_can_run_the_images_and_report_results(template: dict[str, Any]) -> None:
    resolve = Resolver(template)
    api_variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    sagemaker_role = api_variables["ESD_SAGEMAKER_ROLE_ARN"]["Fn::GetAtt"][0]
    statements = role_statements(template, sagemaker_role)
    trust = template["Resources"][sagemaker_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    repository = f"arn:aws:ecr:{PLACE.region}:{PLACE.account}:repository/esd-inference"
    objects = resolve({"Fn::Sub": "${Bucket.Arn}/"})
    logs = f"arn:aws:logs:{PLACE.region}:{PLACE.account}:log-group:/aws/sagemaker"
    for action, resource in [
        ("ecr:GetAuthorizationToken", "*"),
        ("ecr:BatchGetImage", repository),
        ("ecr:GetDownloadUrlForLayer", repository),
        ("s3:GetObject", objects + "Stable-diffusion/checkpoint/custom/id/model.safetensors"),
        ("s3:GetObject", objects + "sagemaker_input/job.json"),
        ("s3:PutObject", objects + "sagemaker_output/result.out"),
        ("sns:Publish", resolve({"Ref": "SuccessTopic"})),
        ("sns:Publish", resolve({"Ref": "ErrorTopic"})),
        ("logs:PutLogEvents", f"{logs}/Endpoints/esd-async-demo:log-stream:prod/i-1"),
        ("logs:PutLogEvents", f"{logs}/TrainingJobs:log-stream:esd-kohya-job/algo-1-1796644800"),
        ("cloudwatch:PutMetricData", "*"),
    ]:
        assert allows(statements, action, resource), f"the SageMaker role cannot {action} on {resource}"
    assert not allows(statements, "s3:DeleteObject", objects + "x")
    assert not allows(statements, "sns:Publish", f"arn:aws:sns:{PLACE.region}:{PLACE.account}:other")


def test_the_sample_resources_are_valid(template: dict[str, Any]) -> None:
    """The resolver's sample values mean what the checks above assume (a guard for this test module)."""
    resolve = Resolver(template)
    assert resolve({"Ref": "TaskFunction"}) == f"{STACK}-tasks"
    assert resolve({"Fn::Sub": "${TablePrefix}users"}) == "esd-users"
    assert re.fullmatch(template["Parameters"]["InferenceImageUri"]["AllowedPattern"], SAMPLE_IMAGE)
    assert Path(TEMPLATE).exists()
