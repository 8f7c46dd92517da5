"""Endpoints: GPU endpoints that run the worker, deployed through the `Compute` port.

An endpoint is `Creating` until its compute reports `InService` (or `Failed`
with the reason) through the events module; only `InService` endpoints take jobs.
Its name is unique: a name guard (`services/names.py`) holds it from create to delete.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from datetime import datetime, timezone

from middleware_api import schema
from middleware_api.ports.compute import ASYNC, ENDPOINT_TYPES, Compute, EndpointSpec
from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.errors import BadRequest, NotFound
from middleware_api.services.names import NameGuards
from middleware_api.services.permissions import Actor
from middleware_api.services.roles import RoleService

IN_SERVICE = "InService"
CREATING = "Creating"
FAILED = "Failed"
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
NAME_PART = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,40}$")
INSTANCE_TYPE = re.compile(r"^(ml\.[a-z0-9]+\.[a-z0-9]+|local)$")
RESTORABLE = ("Creating", "InService", "Updating")


def now_text() -> str:
    """The API's time format: `2024-01-30 07:59:46.842717` (UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


class EndpointService:
    """Create, list and delete endpoints; find one to run a job."""

    def __init__(self, table: Table, compute: Compute, roles: RoleService) -> None:
        self.table = table
        self.compute = compute
        self.roles = roles
        self.names = NameGuards(table, self._holds_name)

    def create(
        self,
        actor: Actor,
        *,
        endpoint_name: str | None,
        endpoint_type: str,
        instance_type: str,
        initial_instance_count: int,
        autoscaling: bool,
        min_instances: int | None,
        max_instances: int | None,
        roles: list[str],
    ) -> Item:
        """Record a new endpoint and start deploying it; returns its public view."""
        actor.require("sagemaker_endpoint", "create")
        if endpoint_type == "Serverless":
            raise BadRequest("Serverless endpoints are not supported: choose Async or Real-time")
        if endpoint_type not in ENDPOINT_TYPES:
            raise BadRequest(f"endpoint_type must be one of {', '.join(ENDPOINT_TYPES)}")
        if not INSTANCE_TYPE.match(instance_type):
            raise BadRequest(f"instance_type {instance_type!r} is not a SageMaker instance type such as ml.g5.2xlarge")
        if initial_instance_count < 1:
            raise BadRequest("initial_instance_count: required minimum: 1")
        self._require_within_instance_limit(initial_instance_count, max_instances)
        low = min_instances if min_instances is not None else (0 if endpoint_type == ASYNC else 1)
        high = max_instances if max_instances is not None else max(initial_instance_count, 1)
        if autoscaling:
            floor = 0 if endpoint_type == ASYNC else 1
            if low < floor:
                raise BadRequest(f"min_instance_number: required minimum: {floor} for {endpoint_type} endpoints")
            if high < max(low, 1):
                raise BadRequest("max_instance_number must be at least 1 and at least min_instance_number")
            if high < initial_instance_count:
                raise BadRequest("max_instance_number must be at least initial_instance_count")
        if not roles:
            raise BadRequest("assign_to_roles: required minimum: 1")
        self.roles.require_existing(roles)
        short = endpoint_name or uuid.uuid4().hex[:7]
        if not NAME_PART.match(short):
            raise BadRequest(
                "endpoint_name must be up to 41 letters, digits or dashes, starting with a letter or digit"
            )
        name = f"esd-{'async' if endpoint_type == ASYNC else 'real-time'}-{short}"
        endpoint_id = str(uuid.uuid4())
        if not self.names.claim(name, endpoint_id):
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists")
        if self.find_by_name(name) is not None:  # one stored before name guards
            self.names.release(name, endpoint_id)
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists")
        item: Item = {
            "EndpointDeploymentJobId": endpoint_id,
            "endpoint_name": name,
            "endpoint_type": endpoint_type,
            "instance_type": instance_type,
            "initial_instance_count": initial_instance_count,
            "current_instance_count": 0,
            "autoscaling": autoscaling,
            "min_instance_number": low,
            "max_instance_number": high,
            "endpoint_status": CREATING,
            "owner_group_or_role": roles,
            "creator": actor.username,
            "startTime": now_text(),
            "created": time.time(),
            "listing": schema.LISTING,
        }
        try:
            self.table.put(item, must_not_exist=True)
        except Exception:
            self.names.release(name, endpoint_id)
            raise
        try:
            self.compute.deploy(spec_of(item))
        except Exception as error:  # the record must say why, not stay Creating
            self.table.update(
                _key(item), {"endpoint_status": FAILED, "error": f"deployment failed: {error}", "endTime": now_text()}
            )
            raise BadRequest(f"deployment of {name} failed: {error}") from error
        return public_endpoint(item)

    def _require_within_instance_limit(self, initial_instance_count: int, max_instances: int | None) -> None:
        """BadRequest if a count is above the compute's limit (local endpoints: one process per instance)."""
        limit = self.compute.max_instances
        if limit is None:
            return
        for field_name, count in (
            ("initial_instance_count", initial_instance_count),
            ("max_instance_number", max_instances),
        ):
            if count is not None and count > limit:
                raise BadRequest(
                    f"{field_name} {count} is above this deployment's limit of {limit} instances per endpoint "
                    f"(each is a local worker process; the limit is set by ESD_LOCAL_MAX_INSTANCES)"
                )

    def find_by_name(self, name: str) -> Item | None:
        """The endpoint with this full name (`esd-async-…`), via the name index."""
        page = self.table.query(name, index="by_name", limit=1, descending=True)
        return page.items[0] if page.items else None

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        """Endpoints visible to the actor's roles, newest first."""
        actor.require("sagemaker_endpoint", "list")
        page = self.table.query(
            schema.LISTING,
            index="by_created",
            limit=limit,
            cursor=cursor,
            where=lambda item: actor.can_see(item.get("owner_group_or_role")),
            descending=True,
        )
        return Page([public_endpoint(item) for item in page.items], page.cursor)

    def delete(self, actor: Actor, names: list[str]) -> None:
        """Delete endpoints (compute resources and records); every name must exist and be visible."""
        actor.require("sagemaker_endpoint", "all")
        found = []
        for name in names:
            item = self.find_by_name(name)
            if item is None or not actor.can_see(item.get("owner_group_or_role")):
                raise NotFound(f"endpoint {name} not found")
            found.append(item)
        for item in found:
            try:
                self.table.update(_key(item), {"endpoint_status": "Deleting"})
            except ConditionFailed:
                continue  # deleted meanwhile by another request
            self.compute.delete(item["endpoint_name"])
            if self.table.delete(_key(item)):
                self.names.release(item["endpoint_name"], item["EndpointDeploymentJobId"])

    def _holds_name(self, endpoint_id: str, name: str) -> bool:
        item = self.table.get({"EndpointDeploymentJobId": endpoint_id})
        return item is not None and item.get("endpoint_name") == name

    def pick_for(self, actor: Actor, inference_type: str, endpoint_name: str | None) -> Item:
        """The endpoint a job runs on: the named one, else an InService one of the type the actor may use."""
        if endpoint_name:
            item = self.find_by_name(endpoint_name)
            if item is None or not actor.can_see(item.get("owner_group_or_role")):
                raise BadRequest(f"endpoint {endpoint_name} not found")
            if item["endpoint_status"] != IN_SERVICE:
                raise BadRequest(f"endpoint {endpoint_name} is {item['endpoint_status']}, not InService")
            return item
        candidates = [
            item
            for item in query_all(self.table, schema.LISTING, index="by_created")
            if item["endpoint_type"] == inference_type
            and item["endpoint_status"] == IN_SERVICE
            and actor.can_see(item.get("owner_group_or_role"))
        ]
        if not candidates:
            raise BadRequest(f'no available {inference_type} endpoints for user "{actor.username}"')
        return random.choice(candidates)  # spread jobs; each endpoint queues its own

    def restorable(self) -> list[EndpointSpec]:
        """Endpoints that were running when the server stopped (local workers come back on restart)."""
        return [
            spec_of(item)
            for item in query_all(self.table, schema.LISTING, index="by_created")
            if item["endpoint_status"] in RESTORABLE
        ]


def spec_of(item: Item) -> EndpointSpec:
    return EndpointSpec(
        name=item["endpoint_name"],
        endpoint_type=item["endpoint_type"],
        instance_type=item["instance_type"],
        initial_instance_count=int(item["initial_instance_count"]),
        autoscaling=bool(item["autoscaling"]),
        min_instances=int(item["min_instance_number"]),
        max_instances=int(item["max_instance_number"]),
    )


def public_endpoint(item: Item) -> Item:
    """The API page's Endpoint shape (counts as strings, as the original sends them)."""
    return {
        "EndpointDeploymentJobId": item["EndpointDeploymentJobId"],
        "endpoint_name": item["endpoint_name"],
        "endpoint_type": item["endpoint_type"],
        "endpoint_status": item["endpoint_status"],
        "instance_type": item["instance_type"],
        "autoscaling": item["autoscaling"],
        "min_instance_number": str(item["min_instance_number"]),
        "max_instance_number": str(item["max_instance_number"]),
        "current_instance_count": str(item.get("current_instance_count", 0)),
        "startTime": item["startTime"],
        "endTime": item.get("endTime"),
        "status": None,
        "error": item.get("error"),
        "owner_group_or_role": item.get("owner_group_or_role", []),
    }


def _key(item: Item) -> Item:
    return {"EndpointDeploymentJobId": item["EndpointDeploymentJobId"]}
