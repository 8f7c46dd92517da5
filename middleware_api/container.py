"""The composition root: builds the ports' adapters for the chosen backend and the services on them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from middleware_api import schema
from middleware_api.ports.background import Background, TaskHandler
from middleware_api.ports.blobs import Blobs
from middleware_api.ports.compute import Compute, ComputeEvents
from middleware_api.ports.tables import Table
from middleware_api.ports.training import Trainer, TrainingEvents
from middleware_api.services.checkpoints import CheckpointService
from middleware_api.services.datasets import DatasetService
from middleware_api.services.endpoints import EndpointService
from middleware_api.services.events import EventService
from middleware_api.services.inferences import InferenceService, InferenceSettings
from middleware_api.services.passwords import digest_secret
from middleware_api.services.roles import ADMIN_ROLE, RoleService
from middleware_api.services.tokens import TokenService
from middleware_api.services.trainings import TrainingService
from middleware_api.services.users import UserService
from middleware_api.settings import Settings, SettingsError

if TYPE_CHECKING:
    from middleware_api.adapters.embedded.blobs import LocalBlobs
    from middleware_api.adapters.embedded.compute import LocalCompute


LAMBDA_TASK_LIMIT_S = 900
INTERRUPTED_JOB = "the server stopped while the job ran; send it again"
INTERRUPTED_DOWNLOAD = "the server stopped while the checkpoint was downloading; create it again"


@dataclass
class Services:
    """Everything a request handler needs, built once per process."""

    settings: Settings
    tables: Mapping[str, Table]
    blobs: Blobs
    background: Background
    api_key_sha256: str | None
    roles: RoleService = field(init=False)
    users: UserService = field(init=False)
    tokens: TokenService = field(init=False)
    compute_factory: Callable[[ComputeEvents], Compute] | None = None
    checkpoints: CheckpointService = field(init=False)
    compute: Compute = field(init=False)
    endpoints: EndpointService = field(init=False)
    inferences: InferenceService = field(init=False)
    trainer_factory: Callable[[TrainingEvents], Trainer] | None = None
    trainer: Trainer = field(init=False)
    datasets: DatasetService = field(init=False)
    trainings: TrainingService = field(init=False)
    events: EventService = field(init=False)
    task_handlers: dict[str, TaskHandler] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    keep_api_key_sha256: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        users_table = self.tables[schema.USERS.name]
        self.roles = RoleService(users_table)
        self.users = UserService(users_table, self.roles)
        self.tokens = TokenService(users_table, self.users)
        self.checkpoints = CheckpointService(self.tables[schema.CHECKPOINTS.name], self.blobs, self.background)
        relay = _EventsRelay()
        if self.compute_factory is None:
            raise ValueError("Services needs a compute_factory")
        self.compute = self.compute_factory(relay)
        self.endpoints = EndpointService(self.tables[schema.ENDPOINTS.name], self.compute, self.roles)
        self.inferences = InferenceService(
            self.tables[schema.INFERENCES.name],
            self.blobs,
            self.compute,
            self.background,
            self.endpoints,
            self.checkpoints,
            InferenceSettings(invocation_timeout_s=self._invocation_timeout_s()),
        )
        if self.trainer_factory is None:
            raise ValueError("Services needs a trainer_factory")
        self.trainer = self.trainer_factory(relay)
        self.datasets = DatasetService(
            self.tables[schema.DATASETS.name], self.tables[schema.DATASET_ITEMS.name], self.blobs
        )
        self.trainings = TrainingService(
            self.tables[schema.TRAININGS.name], self.blobs, self.trainer, self.checkpoints, self.datasets
        )
        self.events = relay.target = EventService(self.endpoints, self.inferences, self.blobs, self.trainings)
        self.task_handlers.update(self.checkpoints.task_handlers())
        self.task_handlers.update(self.inferences.task_handlers())

    def _invocation_timeout_s(self) -> float:
        """A real-time invocation may take the engine's whole time plus the worker's fetching,
        but in the task Lambda no longer than the function may run (900 s)."""
        timeout = self.settings.engine_timeout_s + 60
        if self.settings.task_function_name:
            timeout = min(timeout, LAMBDA_TASK_LIMIT_S - 30)
        return timeout

    def start(self) -> None:
        """Work done once per process start: default roles exist."""
        self.roles.ensure_defaults()

    def first_start(self) -> dict[str, str]:
        """Make what a new deployment lacks: an API key and an admin user.

        Returns the secrets it made (to be shown once, never stored in clear):
        `api_key` and/or `admin_password`.
        """
        made: dict[str, str] = {}
        if self.api_key_sha256 is None:
            if self.keep_api_key_sha256 is None:
                raise SettingsError("set ESD_API_KEY or ESD_API_KEY_SHA256: this backend cannot store a generated key")
            made["api_key"] = secrets.token_urlsafe(32)
            self.use_api_key(made["api_key"])
        if not self.users.has_users():
            password = self.settings.admin_password
            if password is None:
                password = made["admin_password"] = secrets.token_urlsafe(12)
            self.users.bootstrap(self.settings.admin_username, password, [ADMIN_ROLE])
        return made

    def use_api_key(self, api_key: str) -> None:
        """Make `api_key` the deployment key, keeping only its digest where the backend can."""
        self.api_key_sha256 = digest_secret(api_key)
        if self.keep_api_key_sha256:
            self.keep_api_key_sha256(self.api_key_sha256)

    def close(self) -> None:
        self.compute.close()
        self.trainer.close()
        self.background.close()
        for closer in self.closers:
            closer()


class _EventsRelay:
    """The compute's `ComputeEvents` and the trainer's `TrainingEvents`, forwarding to the event service
    built after them."""

    target: EventService

    def endpoint_state(self, endpoint_name: str, status: str, reason: str | None = None) -> None:
        self.target.endpoint_state(endpoint_name, status, reason)

    def async_result(
        self, inference_id: str, succeeded: bool, output_location: str | None, error: str | None = None
    ) -> None:
        self.target.async_result(inference_id, succeeded, output_location, error)

    def training_state(
        self, job_id: str, status: str, secondary_status: str | None = None, reason: str | None = None
    ) -> None:
        self.target.training_state(job_id, status, secondary_status, reason)

    def training_log(self, job_id: str, lines: list[str]) -> None:
        self.target.training_log(job_id, lines)


def build_services(settings: Settings, *, start: bool = True) -> Services:
    """Services on the backend the settings name (`embedded` or `aws`).

    `start=False` skips the aws backend's start (the default roles' conditional writes): for a
    process that only reads, such as the API Gateway authorizer, whose role may only read.
    """
    handlers: dict[str, TaskHandler] = {}
    if settings.backend == "aws":
        services = _aws_services(settings, handlers)
        if start:
            services.start()
    else:
        services = _embedded_services(settings, handlers)
        services.start()
        _recover_embedded(services)
    return services


def _recover_embedded(services: Services) -> None:
    """Start where the previous embedded server stopped, even killed: its local endpoints come back, but not
    its jobs and downloads (threads and queues of that process), nor the temp files of writes it left unfinished.

    Uploads keep the parts received, so clients can send the rest. Not for aws: its jobs run on
    SageMaker and its downloads in the task Lambda, and outlive any API process.
    """
    blobs: LocalBlobs = services.blobs  # type: ignore[assignment]
    local: LocalCompute = services.compute  # type: ignore[assignment]
    services.trainings.fail_unfinished("the server stopped while the job ran; start it again")
    services.inferences.fail_unfinished(INTERRUPTED_JOB)
    services.checkpoints.fail_interrupted_downloads(INTERRUPTED_DOWNLOAD)
    blobs.remove_temp_files()
    local.restore(services.endpoints.restorable())


def _deployment_key_digest(settings: Settings, stored: str | None = None) -> str | None:
    if settings.api_key:
        return digest_secret(settings.api_key)
    return settings.api_key_sha256 or stored


def _embedded_services(settings: Settings, handlers: dict[str, TaskHandler]) -> Services:
    from middleware_api.adapters.embedded.background import ThreadBackground
    from middleware_api.adapters.embedded.blobs import LocalBlobs, UrlSigner
    from middleware_api.adapters.embedded.compute import LocalCompute, LocalComputeSettings
    from middleware_api.adapters.embedded.secrets import LocalSecrets
    from middleware_api.adapters.embedded.tables import SqliteDatabase
    from middleware_api.adapters.embedded.training import LocalTrainer, LocalTrainerSettings

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secrets = LocalSecrets(settings.data_dir)
    database = SqliteDatabase(settings.data_dir / "esd.sqlite3")
    tables = {spec.name: database.table(spec) for spec in schema.ALL_TABLES}
    blobs = LocalBlobs(settings.data_dir / "blobs", UrlSigner(secrets.signing_key), public_url=settings.public_url)
    compute_settings = LocalComputeSettings(
        engine_url=settings.engine_url,
        work_dir=settings.data_dir / "endpoints",
        engine_timeout_s=settings.engine_timeout_s,
        health_timeout_s=settings.endpoint_health_timeout_s,
        max_instances=settings.local_max_instances,
    )
    trainer_settings = LocalTrainerSettings(
        work_dir=settings.data_dir / "trainings", kohya_dir=settings.kohya_dir, kohya_python=settings.kohya_python
    )
    services = Services(
        compute_factory=lambda events: LocalCompute(events, blobs, compute_settings),
        trainer_factory=lambda events: LocalTrainer(events, blobs, trainer_settings),
        settings=settings,
        tables=tables,
        blobs=blobs,
        background=ThreadBackground(handlers),
        api_key_sha256=_deployment_key_digest(settings, secrets.api_key_sha256),
        task_handlers=handlers,
        closers=[database.close],
        keep_api_key_sha256=secrets.store_api_key_sha256,
    )
    return services


def _aws_services(settings: Settings, handlers: dict[str, TaskHandler]) -> Services:
    import boto3

    from middleware_api.adapters.aws.background import LambdaBackground
    from middleware_api.adapters.aws.blobs import S3Blobs, s3_client
    from middleware_api.adapters.aws.compute import SageMakerClients, SageMakerCompute, SageMakerSettings
    from middleware_api.adapters.aws.tables import DynamoTable
    from middleware_api.adapters.aws.training import SageMakerTrainer, SageMakerTrainingSettings
    from middleware_api.adapters.embedded.background import ThreadBackground

    session = boto3.session.Session(region_name=settings.region)
    endpoint = {"endpoint_url": settings.aws_endpoint_url} if settings.aws_endpoint_url else {}
    dynamodb = session.resource("dynamodb", **endpoint)
    tables = {spec.name: DynamoTable(dynamodb, settings.table_prefix + spec.name, spec) for spec in schema.ALL_TABLES}
    blobs = S3Blobs(s3_client(settings.region, settings.aws_endpoint_url, session), settings.bucket or "")
    clients = SageMakerClients.from_session(session, settings.aws_endpoint_url)
    try:
        sagemaker_settings = SageMakerSettings.from_env(os.environ)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    if settings.task_function_name:  # in Lambda: background work runs in the task function
        background: Background = LambdaBackground(session.client("lambda", **endpoint), settings.task_function_name)
    else:
        background = ThreadBackground(handlers)
    return Services(
        compute_factory=lambda events: SageMakerCompute(clients, blobs, sagemaker_settings),
        trainer_factory=lambda events: SageMakerTrainer(
            clients.sagemaker, SageMakerTrainingSettings.from_env(os.environ), session.region_name
        ),
        settings=settings,
        tables=tables,
        blobs=blobs,
        background=background,
        api_key_sha256=_deployment_key_digest(settings),
        task_handlers=handlers,
    )
