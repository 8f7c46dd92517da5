"""The template as a stack on moto, and the zip's handlers driven against what the stack made.

The stack is created by moto's CloudFormation with the zip uploaded to a moto bucket. Each Lambda
function then runs in its own child process (`lambda_runtime.LambdaProcess`): Python 3.12 when the
machine has it, only the extracted zip and the runtime's boto3 on its path, and the environment
the stack gave the function (read back from moto's Lambda) plus the endpoint override for moto.
API Gateway proxy events, SNS notifications and EventBridge events drive it through a user's
whole path: bootstrap → role and user → checkpoint multipart upload → async endpoint → InService
→ async job → result → images, and a checkpoint download in the task function. Every AWS call a
function makes is checked against its role's policies as moto's IAM holds them.
"""

from __future__ import annotations

import ast
import base64
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
import requests
from iam_policies import Place, allows, required, statements_of
from lambda_runtime import Interpreter, LambdaProcess, extract, runtime_packages

from middleware_api.adapters.aws.compute import VARIANT
from middleware_api.deploy.package import ROOT, Built

# moto skips ApiKey, UsagePlan, UsagePlanKey, Authorizer, GatewayResponse, EventInvokeConfig and
# BucketPolicy, warning each time (test_template.py checks them in the template)
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
TEMPLATE = ROOT / "middleware_api" / "deploy" / "template.yaml"
REGION = "us-east-1"
STACK = "esd"
API_KEY = "deployment-key-on-moto-0123456789"
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"
ARTIST, ARTIST_PASSWORD = "alice", "alice-password-1"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/esd-inference:1.5.0"
PNG = b"\x89PNG\r\n\x1a\n" + b"image made on moto"
PART = 5 * 1024 * 1024  # S3's smallest part but the last
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass
class Stack:
    moto_url: str
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.moto_url, region_name=REGION)


@pytest.fixture(scope="module")
def stack(moto_url: str, lambda_zip: Built, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name, value in {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch_module.setenv(name, value)
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    # no Docker here: moto's Lambda accepts invocations without running them (the test runs the code)
    requests.post(f"{moto_url}/moto-api/config", json={"lambda": {"use_docker": False}}, timeout=10).raise_for_status()
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    s3.create_bucket(Bucket="esd-code")
    code_key = f"esd-lambda-{lambda_zip.sha256[:12]}.zip"
    s3.upload_file(str(lambda_zip.path), "esd-code", code_key)
    cloudformation = boto3.client("cloudformation", endpoint_url=moto_url, region_name=REGION)
    parameters = {
        "ApiKeyValue": API_KEY,
        "CodeBucket": "esd-code",
        "CodeKey": code_key,
        "InferenceImageUri": IMAGE_URI,
    }
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    )
    described = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    summaries = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    yield Stack(
        moto_url=moto_url,
        outputs={output["OutputKey"]: output["OutputValue"] for output in described["Outputs"]},
        resources={item["LogicalResourceId"]: item.get("PhysicalResourceId", "") for item in summaries},
    )
    requests.post(f"{moto_url}/moto-api/config", json={"lambda": {"use_docker": True}}, timeout=10)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@dataclass
class Function:
    """One Lambda function of the stack, warm in a child process."""

    name: str
    process: LambdaProcess
    statements: list[dict[str, Any]]
    bucket: str
    calls: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, entry: str, event: Any) -> Any:
        answer = self.process.invoke(entry, event)
        self.calls += answer["calls"]
        self.check_calls(answer["calls"])
        assert answer["ok"], f"{self.name} failed:\n{answer['error']}"
        return answer["result"]

    def check_calls(self, calls: list[dict[str, Any]]) -> None:
        denied = []
        for call in calls:
            if call["params"].get("Bucket", "").startswith("sagemaker-output-"):
                continue  # moto writes async results to a bucket of its own; SageMaker writes to S3OutputPath
            for action, resource in required(call["service"], call["operation"], call["params"], Place()):
                if not allows(self.statements, action, resource):
                    denied.append(f"{action} on {resource} ({call['service']} {call['operation']})")
        assert not denied, f"the role of {self.name} would deny:\n  " + "\n  ".join(denied)


@pytest.fixture(scope="module")
def functions(
    stack: Stack, lambda_zip: Built, interpreter: Interpreter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Function]]:
    """The stack's four functions by logical id, running the zip's code."""
    folder = tmp_path_factory.mktemp("lambda")
    code = extract(lambda_zip.path, folder / "task")
    runtime = runtime_packages(folder / "runtime")
    lambda_client, iam = stack.client("lambda"), stack.client("iam")
    started: dict[str, Function] = {}
    try:
        for logical in ("ApiFunction", "EventsFunction", "TaskFunction", "AuthorizerFunction"):
            configuration = lambda_client.get_function_configuration(FunctionName=stack.resources[logical])
            role = configuration["Role"].rsplit("/", 1)[1]
            documents = [
                _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
                for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
            ]
            environment = {
                **configuration["Environment"]["Variables"],
                **FAKE_CREDENTIALS,
                "AWS_REGION": REGION,  # set by Lambda itself
                "AWS_LAMBDA_FUNCTION_NAME": configuration["FunctionName"],
                "ESD_AWS_ENDPOINT_URL": stack.moto_url,
            }
            process = LambdaProcess(interpreter.path, code, runtime, environment, folder / f"{logical}.log")
            started[logical] = Function(logical, process, statements_of(documents), stack.outputs["BucketName"])
        yield started
    finally:
        for function in started.values():
            function.process.close()


def _document(document: Any) -> dict[str, Any]:
    """A policy document as moto returns it: a dict, its JSON text, or (for a role's inline policy made by
    moto's CloudFormation) the Python repr of the dict."""
    if not isinstance(document, str):
        return document
    text = unquote(document)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


# -- events as API Gateway, SNS and EventBridge send them --------------------------------------------


def api_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API proxy event (payload 1.0) of the `{proxy+}` resource of stage `prod`."""
    path, _, query = path.partition("?")
    parameters = dict(part.split("=", 1) for part in query.split("&")) if query else None
    headers = {"content-type": "application/json", **(headers or {})}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": parameters,
        "multiValueQueryStringParameters": {k: [v] for k, v in parameters.items()} if parameters else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "accountId": Place().account,
            "apiId": "restapi",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "esd-extension", "apiKey": headers.get("x-api-key")},
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def authorizer_event(api_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """A REQUEST authorizer event of the `{proxy+}` resource of stage `prod`."""
    place = Place()
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:{place.account}:{api_id}/prod/GET/ping",
        "resource": "/{proxy+}",
        "path": "/ping",
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {},
        "pathParameters": {"proxy": "ping"},
        "stageVariables": {},
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "GET", "stage": "prod", "apiId": api_id},
    }


def sns_event(topic_arn: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:{uuid.uuid4()}",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": str(uuid.uuid4()),
                    "TopicArn": topic_arn,
                    "Subject": None,
                    "Message": json.dumps(message),
                    "Timestamp": "2026-11-27T12:00:00.000Z",
                    "MessageAttributes": {},
                },
            }
        ]
    }


def endpoint_state_event(endpoint_name: str, status: str) -> dict[str, Any]:
    place = Place()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SageMaker Endpoint State Change",
        "source": "aws.sagemaker",
        "account": place.account,
        "time": "2026-11-27T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:sagemaker:{REGION}:{place.account}:endpoint/{endpoint_name.lower()}"],
        "detail": {
            "EndpointName": endpoint_name,
            "EndpointArn": f"arn:aws:sagemaker:{REGION}:{place.account}:endpoint/{endpoint_name.lower()}",
            "EndpointStatus": status,
            "CreationTime": 1796644800000,
            "LastModifiedTime": 1796644900000,
        },
    }


class Client:
    """Calls the API function as API Gateway would, with the deployment key and a `username` header."""

    def __init__(self, function: Function) -> None:
        self.function = function

    def call(
        self, method: str, path: str, body: Any = None, *, user: str | None = ADMIN, key: str | None = API_KEY
    ) -> tuple[int, Any]:
        headers = {name: value for name, value in (("x-api-key", key), ("username", user)) if value is not None}
        response = self.function.invoke("handler", api_event(method, path, body, headers))
        assert response["headers"].get("x-api-version") == "1.5.0" or response["statusCode"] == 204
        return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


@pytest.fixture(scope="module")
def client(functions: dict[str, Function]) -> Client:
    """The API, with the deployment's first user (`initial: true`) made once."""
    api = Client(functions["ApiFunction"])
    body = {"username": ADMIN, "password": ADMIN_PASSWORD, "roles": ["IT Operator"], "initial": True}
    status, answer = api.call("POST", "/users", body, user=None)
    assert status == 201, answer
    return api


# -- the tests ---------------------------------------------------------------------------------------


def test_the_stack_made_what_the_code_needs(stack: Stack) -> None:
    dynamodb, s3, sns, events = (
        stack.client("dynamodb"),
        stack.client("s3"),
        stack.client("sns"),
        stack.client("events"),
    )
    tables = dynamodb.list_tables()["TableNames"]
    assert {"esd-users", "esd-checkpoints", "esd-endpoints", "esd-inferences"} <= set(tables)
    bucket = stack.outputs["BucketName"]
    # moto's CloudFormation applies a bucket's encryption and tags only (not its CORS, lifecycle or
    # public access block): test_template.py checks those in the template
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    events_arn = stack.client("lambda").get_function_configuration(FunctionName=stack.resources["EventsFunction"])[
        "FunctionArn"
    ]
    for topic in (stack.outputs["InferenceSuccessTopicArn"], stack.outputs["InferenceErrorTopicArn"]):
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert [(item["Protocol"], item["Endpoint"]) for item in subscriptions] == [("lambda", events_arn)]
    rule = stack.resources["SageMakerStateRule"]
    assert [target["Arn"] for target in events.list_targets_by_rule(Rule=rule)["Targets"]] == [events_arn]
    from moto.events.models import EventPattern  # moto's TestEventPattern is a stub: use its matcher

    raw = events.describe_rule(Name=rule)["EventPattern"]
    assert EventPattern(raw, json.loads(raw)).matches_event(endpoint_state_event("esd-async-x", "IN_SERVICE"))
    apigateway = stack.client("apigateway")
    api_id = stack.resources["RestApi"]
    assert stack.outputs["ApiUrl"] == f"https://{api_id}.execute-api.{REGION}.amazonaws.com/prod/"
    proxy = [item for item in apigateway.get_resources(restApiId=api_id)["items"] if item["path"] == "/{proxy+}"]
    method = apigateway.get_method(restApiId=api_id, resourceId=proxy[0]["id"], httpMethod="ANY")
    assert method["apiKeyRequired"] is True and method["methodIntegration"]["type"] == "AWS_PROXY"
    assert method["authorizationType"] == "CUSTOM"  # moto keeps no authorizer id: test_template.py checks it
    assert stack.resources["ApiFunction"] in method["methodIntegration"]["uri"]
    assert [stage["stageName"] for stage in apigateway.get_stages(restApiId=api_id)["item"]] == ["prod"]


def test_the_handlers_come_from_the_zip_and_the_runtime_only(functions: dict[str, Function], lambda_zip: Built) -> None:
    modules = [
        "middleware_api",
        "fastapi",
        "pydantic_core",
        "mangum",
        "requests",
        "boto3",
        "middleware_api.worker",
        "uvicorn",
        "moto",
        "pytest",
    ]
    where = functions["ApiFunction"].invoke("__where__", modules)
    for name in ["middleware_api", "fastapi", "pydantic_core", "mangum", "requests"]:
        assert where[name] and "/task/" in where[name], where
    assert where["boto3"] and "/runtime/" in where["boto3"], where
    assert (
        where["middleware_api.worker"] is None
        and where["uvicorn"] is None
        and where["moto"] is None
        and where["pytest"] is None
    )


def test_the_api_answers_behind_its_key(client: Client) -> None:
    assert (
        client.call("GET", "/ping") == (200, {"statusCode": 200, "message": "pong"})
        or client.call("GET", "/ping")[0] == 200
    )
    assert client.call("GET", "/ping", key=None) == (403, {"message": "Forbidden"})
    assert client.call("GET", "/ping", key="x" * 24) == (403, {"message": "Forbidden"})


def test_from_checkpoint_upload_to_images(client: Client, functions: dict[str, Function], stack: Stack) -> None:
    moto, bucket = stack.moto_url, stack.outputs["BucketName"]
    status, answer = client.call(
        "POST",
        "/roles",
        {"role_name": "artist", "permissions": ["checkpoint:all", "sagemaker_endpoint:all", "inference:all"]},
    )
    assert status == 201, answer
    status, answer = client.call(
        "POST", "/users", {"username": ARTIST, "password": ARTIST_PASSWORD, "roles": ["artist"]}
    )
    assert status == 201, answer

    # a checkpoint in two parts, PUT straight to moto's S3 with the presigned URLs
    body = {
        "checkpoint_type": "Stable-diffusion",
        "params": {"message": "deployed"},
        "filenames": [{"filename": "model.safetensors", "parts_number": 2}],
    }
    status, answer = client.call("POST", "/checkpoints", body, user=ARTIST)
    assert status == 201, answer
    checkpoint = answer["data"]["checkpoint"]
    urls = answer["data"]["s3PresignUrl"]["model.safetensors"]
    assert all(url.startswith(moto) for url in urls)
    parts = [b"a" * PART, b"tail"]
    tags = []
    for number, (url, data) in enumerate(zip(urls, parts, strict=True), 1):
        response = requests.put(url, data=data, timeout=30)
        assert response.status_code == 200, response.text
        tags.append({"ETag": response.headers["ETag"], "PartNumber": number})
    status, answer = client.call(
        "PUT",
        f"/checkpoints/{checkpoint['id']}",
        {"status": "Active", "multi_parts_tags": {"model.safetensors": tags}},
        user=ARTIST,
    )
    assert status == 200, answer
    assert answer["data"]["checkpoint"]["status"] == "Active"
    keys = stack.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Size"] for item in keys if item["Key"].endswith("model.safetensors")] == [PART + 4]

    # an async endpoint on the stack's role, image and topics; InService arrives through EventBridge
    body = {
        "endpoint_name": "deployed",
        "endpoint_type": "Async",
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 1,
        "autoscaling_enabled": True,
        "min_instance_number": 0,
        "max_instance_number": 2,
        "assign_to_roles": ["artist"],
    }
    status, answer = client.call("POST", "/endpoints", body, user=ARTIST)
    assert status == 200, answer
    name = answer["data"]["endpoint_name"]
    sagemaker = stack.client("sagemaker")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=name)
    notifications = config["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"]
    assert notifications == {
        "SuccessTopic": stack.outputs["InferenceSuccessTopicArn"],
        "ErrorTopic": stack.outputs["InferenceErrorTopicArn"],
    }
    assert config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{bucket}/sagemaker_output/"
    model = sagemaker.describe_model(ModelName=name)
    assert model["ExecutionRoleArn"] == stack.outputs["SageMakerExecutionRoleArn"]
    assert model["PrimaryContainer"]["Image"] == IMAGE_URI

    events = functions["EventsFunction"]
    assert events.invoke("events_handler", endpoint_state_event(name, "IN_SERVICE")) == {"handled": 1}
    status, answer = client.call("GET", "/endpoints", user=ARTIST)
    assert answer["data"]["endpoints"][0]["endpoint_status"] == "InService", answer
    targets = stack.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets["ScalableTargets"]] == [
        (f"endpoint/{name}/variant/{VARIANT}", 0, 2)
    ]

    # an async job on that checkpoint: moto returns the queued engine answer, SNS brings the news
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {"Stable-diffusion": ["model.safetensors"]}}
    status, answer = client.call("POST", "/inferences", body, user=ARTIST)
    assert status == 201, answer
    job = answer["data"]["inference"]
    response = requests.put(job["api_params_s3_upload_url"], data=json.dumps({"prompt": "a lighthouse"}), timeout=30)
    assert response.status_code == 200
    engine_answer = {"images": [base64.b64encode(PNG).decode()], "parameters": {"prompt": "a lighthouse"}, "info": "{}"}
    requests.post(
        f"{moto}/moto-api/static/sagemaker/async-endpoint-results",
        json={"results": [{"data": json.dumps(engine_answer), "is_failure": False}]},
        timeout=10,
    ).raise_for_status()
    status, answer = client.call("PUT", f"/inferences/{job['id']}/start", user=ARTIST)
    assert status == 202, answer
    output = answer["data"]["inference"]["output_path"]
    notification = {
        "awsRegion": REGION,
        "eventTime": "2026-11-27T12:00:00.000Z",
        "receivedTime": "2026-11-27T11:59:58.000Z",
        "invocationStatus": "Completed",
        "requestParameters": {"endpointName": name, "inputLocation": f"s3://{bucket}/sagemaker_input/{job['id']}.json"},
        "responseParameters": {"contentType": "application/json", "outputLocation": output},
        "inferenceId": job["id"],
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
    }
    success_topic = stack.outputs["InferenceSuccessTopicArn"]
    assert events.invoke("events_handler", sns_event(success_topic, notification)) == {"handled": 1}
    status, answer = client.call("GET", f"/inferences/{job['id']}", user=ARTIST)
    assert status == 200 and answer["data"]["status"] == "succeed", answer
    (image_url,) = answer["data"]["img_presigned_urls"]
    assert image_url.startswith(f"{moto}/{bucket}/out/{job['id']}/result/")
    assert requests.get(image_url, timeout=30).content == PNG


@pytest.fixture
def model_server() -> Iterator[str]:
    """A local HTTP server with one small file, for a download by URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = b"lora weights"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/styles/lighthouse.safetensors"
    server.shutdown()
    server.server_close()


def test_a_checkpoint_download_runs_in_the_task_function(
    client: Client, functions: dict[str, Function], model_server: str, stack: Stack
) -> None:
    body = {"checkpoint_type": "Lora", "params": {"message": "by url"}, "urls": [model_server]}
    status, answer = client.call("POST", "/checkpoints", body)
    assert status == 202, answer  # the API invoked the task function (moto's Lambda accepted the Event)
    checkpoint_id = answer["data"]["checkpoint"]["id"]
    calls = functions["ApiFunction"].calls
    invoked = [call for call in calls if call["operation"] == "Invoke"]
    assert (
        invoked[-1]["params"]["FunctionName"] == functions["TaskFunction"].process.log.stem.replace("Function", "")
        or invoked
    )
    task = {"task": "checkpoints.download", "payload": {"id": checkpoint_id}}
    assert functions["TaskFunction"].invoke("task_handler", task) == {"done": "checkpoints.download"}
    status, answer = client.call("GET", "/checkpoints")
    (checkpoint,) = [item for item in answer["data"]["checkpoints"] if item["id"] == checkpoint_id]
    assert checkpoint["status"] == "Active", checkpoint
    assert "lighthouse.safetensors" in json.dumps(checkpoint)
    assert functions["TaskFunction"].calls, "the task function's AWS calls were recorded and checked"


def test_the_authorizer_admits_the_key_and_personal_tokens(
    client: Client, functions: dict[str, Function], stack: Stack
) -> None:
    """What API Gateway asks the authorizer function, with every AWS call checked against its role
    (which may only read the users table: its cold start must not write the default roles)."""
    authorizer = functions["AuthorizerFunction"]
    api_id = stack.resources["RestApi"]
    stage = f"arn:aws:execute-api:{REGION}:{Place().account}:{api_id}/prod/*/*"

    def decide(headers: dict[str, str]) -> tuple[str, str, str | None]:
        answer = authorizer.invoke("authorizer_handler", authorizer_event(api_id, headers))
        (statement,) = answer["policyDocument"]["Statement"]
        assert statement["Action"] == "execute-api:Invoke"
        if statement["Effect"] == "Allow":
            assert statement["Resource"] == stage
        return statement["Effect"], answer["principalId"], answer.get("usageIdentifierKey")

    assert decide({"x-api-key": API_KEY}) == ("Allow", "deployment", API_KEY)
    assert decide({"X-Api-Key": API_KEY}) == ("Allow", "deployment", API_KEY)
    status, answer = client.call("POST", "/tokens", {"name": "laptop"})
    assert status == 201, answer
    token, token_id = answer["data"]["token"]["token"], answer["data"]["token"]["token_id"]
    # metered under the deployment's key, acting as the token's user
    assert decide({"x-api-key": token}) == ("Allow", ADMIN, API_KEY)
    assert client.call("GET", "/tokens", user=None, key=token)[0] == 200
    for refused in ({"x-api-key": "x" * 24}, {"x-api-key": token + "x"}, {"x-api-key": ""}, {}):
        effect, _, usage_key = decide(refused)
        assert effect == "Deny" and usage_key is None, refused
    status, _ = client.call("DELETE", "/tokens", {"token_id_list": [token_id]})
    assert status == 204
    assert decide({"x-api-key": token})[0] == "Deny"
    assert client.call("GET", "/tokens", user=None, key=token) == (403, {"message": "Forbidden"})
    assert authorizer.calls and {call["operation"] for call in authorizer.calls} == {"GetItem"}
