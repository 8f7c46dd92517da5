"""Concurrency fault tests on both backends: 50 requests at once through the routes.

Each test fires its requests from a 50-thread pool at one app (`api`, parametrized over embedded and
aws in conftest), then checks what is stored: nothing lost, no duplicate ids, unique names held by
exactly one record, and no user left holding a role that no longer exists.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import ADMIN, Api

from middleware_api.services.errors import NotFound, Unauthorized
from middleware_api.services.names import CLAIMED, GUARD_PREFIX, STALE_AFTER_S

WORKERS = 50
ROLE = ["IT Operator"]
TAKEN = "already exists, please use another or rename/delete exists"


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 20 µs instead of 5 ms, so that racing requests interleave finely (as on a busy server)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(2e-5)
    yield
    sys.setswitchinterval(previous)


def at_once(calls: Iterable[Callable[[], Any]]) -> list[Any]:
    """Run every call on its own worker thread, all released together; their results in order."""
    calls = list(calls)
    assert len(calls) <= WORKERS
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(run, calls))


def list_all(api: Api, path: str, field: str, limit: int = 7) -> list[dict[str, Any]]:
    """Every item of a list route, page by page (a small page size, so there are many pages)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(1000):
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        items += data[field]
        if not data["last_evaluated_key"]:
            return items
        params["exclusive_start_key"] = data["last_evaluated_key"]
    raise AssertionError(f"{path} never reached its last page")


def message(response: Any) -> str:
    return response.json().get("message", "")


# -- jobs -------------------------------------------------------------------------------------


def test_concurrent_job_creations_are_all_kept_once(api: Api) -> None:
    endpoint = {"endpoint_name": "busy", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
    created = api.post("/endpoints", endpoint)
    assert created.status_code == 200, created.text
    api.services.events.endpoint_state(created.json()["data"]["endpoint_name"], "InService")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}

    responses = at_once(lambda: api.post("/inferences", body) for _ in range(WORKERS))

    assert [response.status_code for response in responses] == [201] * WORKERS, [r.text for r in responses]
    ids = [response.json()["data"]["inference"]["id"] for response in responses]
    assert len(set(ids)) == WORKERS
    for job_id in ids:
        job = api.get(f"/inferences/{job_id}")
        assert job.status_code == 200 and job.json()["data"]["InferenceJobId"] == job_id
    listed = [item["InferenceJobId"] for item in list_all(api, "/inferences", "inferences")]
    assert sorted(listed) == sorted(ids)  # each exactly once


# -- users and roles -----------------------------------------------------------------------------


def test_concurrent_user_and_role_edits_keep_the_invariants(api: Api) -> None:
    """Creates, role changes, password changes and deletes of users race creates, updates and deletes of roles."""
    lasting = ["keep-a", "keep-b"]
    doomed = [f"doomed-{number}" for number in range(5)]
    for name in lasting + doomed:
        api.make_role(name, ["inference:all"])
    old_users = [f"old-{number}" for number in range(6)]
    gone = old_users[-1]  # deleted while being edited
    passwords = {name: {"first-password"} for name in old_users}
    role_lists = {name: [[doomed[number % 5], lasting[number % 2]]] for number, name in enumerate(old_users)}
    for name in old_users:
        api.make_user(name, role_lists[name][0], password="first-password")
    pick = random.Random(7)
    calls: list[tuple[str, Callable[[], Any]]] = []
    new_users: dict[str, str] = {}
    for number in range(20):  # new users, each also given a role that is being deleted
        name, password = f"new-{number}", f"new-password-{number}"
        new_users[name] = password
        body = {"username": name, "password": password, "roles": [lasting[number % 2], doomed[number % 5]]}
        calls.append((name, lambda b=body: api.post("/users", b)))
    for number in range(15):  # role and password changes of a few users, racing each other
        name = old_users[number % len(old_users)]
        body = {"username": name, "roles": pick.sample(lasting + doomed, 2)}
        role_lists[name].append(body["roles"])
        if number % 3 == 0:
            body["password"] = f"changed-password-{number}"
            passwords[name].add(body["password"])
        calls.append((name, lambda b=body: api.post("/users", b)))
    calls += [("roles", lambda r=role: api.delete("/roles", {"role_name_list": [r]})) for role in doomed]
    fresh = [f"fresh-{number}" for number in range(5)]
    calls += [
        ("roles", lambda r=role: api.post("/roles", {"role_name": r, "permissions": ["train:all"]})) for role in fresh
    ]
    calls += [("roles", lambda: api.post("/roles", {"role_name": lasting[0], "permissions": ["inference:all"]}))]
    # a role updated while deleted comes back (created again), never a 500
    calls += [("roles", lambda: api.post("/roles", {"role_name": doomed[0], "permissions": ["train:all"]}))] * 2
    calls += [(gone, lambda: api.delete("/users", {"user_name_list": [gone]}))] * 2
    assert len(calls) == WORKERS
    pick.shuffle(calls)

    outcomes = list(zip([what for what, _ in calls], at_once(call for _, call in calls), strict=True))

    for what, response in outcomes:
        refusals = ['user roles "doomed-'] + (['required properties (["password"])'] if what == gone else [])
        assert response.status_code < 400 or any(text in message(response) for text in refusals), response.text
    roles = {role["role_name"] for role in list_all(api, "/roles", "roles")}
    assert roles.isdisjoint(doomed[1:]) and set(lasting + fresh) <= roles
    users = {user["username"]: user for user in list_all(api, "/users", "users")}
    for user in users.values():
        assert set(user["roles"]) <= roles, f"{user['username']} holds a deleted role: {user['roles']}"
    assert gone not in users and ADMIN in users
    for name, password in new_users.items():
        created = [response.status_code for what, response in outcomes if what == name] == [201]
        assert (name in users) == created, f"{name}: created {created}, stored {name in users}"
        if created:
            assert api.services.users.check_credentials(name, password).username == name
    for name in old_users[:-1]:
        assert name in users, f"{name} was lost"
        held = set(users[name]["roles"])  # what one edit gave, less the roles deleted since: never a mix of two
        assert any(held <= set(given) and set(given) - held <= set(doomed) for given in role_lists[name]), held
        assert any(_verifies(api, name, password) for password in passwords[name]), f"{name}: no password verifies"


def _verifies(api: Api, username: str, password: str) -> bool:
    try:
        api.services.users.check_credentials(username, password)
        return True
    except Unauthorized:
        return False


# -- unique names ------------------------------------------------------------------------------------


def create_checkpoint(api: Api, name: str) -> Any:
    body = {
        "checkpoint_type": "Lora",
        "params": {"message": "race"},
        "filenames": [{"filename": name, "parts_number": 1}],
    }
    return api.post("/checkpoints", body)


def checkpoints_named(api: Api, name: str) -> list[dict[str, Any]]:
    return [item for item in list_all(api, "/checkpoints", "checkpoints", limit=20) if name in item["name"]]


def test_concurrent_creates_of_one_checkpoint_name_let_one_win(api: Api) -> None:
    responses = at_once(lambda: create_checkpoint(api, "same.safetensors") for _ in range(WORKERS))

    codes = sorted(response.status_code for response in responses)
    assert codes == [201] + [400] * (WORKERS - 1), [r.text for r in responses if r.status_code != 400]
    assert all(message(r) == f"same.safetensors {TAKEN}" for r in responses if r.status_code == 400)
    winner = next(r for r in responses if r.status_code == 201).json()["data"]["checkpoint"]["id"]
    assert [item["id"] for item in checkpoints_named(api, "same.safetensors")] == [winner]


def test_concurrent_creates_of_one_endpoint_name_let_one_win(api: Api) -> None:
    body = {"endpoint_name": "twin", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}

    responses = at_once(lambda: api.post("/endpoints", body) for _ in range(WORKERS))

    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [400] * (WORKERS - 1), [r.text for r in responses if r.status_code != 400]
    assert all(message(r) == f"esd-async-twin {TAKEN}" for r in responses if r.status_code == 400)
    listed = [item for item in list_all(api, "/endpoints", "endpoints") if item["endpoint_name"] == "esd-async-twin"]
    winner = next(r for r in responses if r.status_code == 200).json()["data"]["EndpointDeploymentJobId"]
    assert [item["EndpointDeploymentJobId"] for item in listed] == [winner]


def test_concurrent_delete_and_recreate_keep_one_holder_per_name(api: Api) -> None:
    """Workers create a name, delete what they got, and create it again: at no end do two records hold it."""

    def cycle() -> list[int]:
        codes = []
        for _ in range(3):
            created = create_checkpoint(api, "cycle.safetensors")
            codes.append(created.status_code)
            if created.status_code == 201:
                checkpoint_id = created.json()["data"]["checkpoint"]["id"]
                deleted = api.delete("/checkpoints", {"checkpoint_id_list": [checkpoint_id]})
                assert deleted.status_code == 204, deleted.text
        return codes

    def endpoint_cycle() -> list[int]:
        codes = []
        body = {"endpoint_name": "cycle", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
        for _ in range(2):
            created = api.post("/endpoints", body)
            codes.append(created.status_code)
            if created.status_code == 200:
                deleted = api.delete("/endpoints", {"endpoint_name_list": ["esd-async-cycle"]})
                assert deleted.status_code in (204, 404), deleted.text
        return codes

    results = at_once([cycle] * 35 + [endpoint_cycle] * 15)

    codes = [code for result in results for code in result]
    assert set(codes) <= {200, 201, 400} and {201, 400} <= set(codes), codes
    checkpoint_guards, endpoint_guards = api.services.checkpoints.names, api.services.endpoints.names
    assert checkpoints_named(api, "cycle.safetensors") == []
    assert checkpoint_guards.holder("Lora/cycle.safetensors") is None
    assert [
        item for item in list_all(api, "/endpoints", "endpoints") if item["endpoint_name"] == "esd-async-cycle"
    ] == []
    assert endpoint_guards.holder("esd-async-cycle") is None
    # every name was released: it can be taken again, by exactly one record, which holds its guard
    again = create_checkpoint(api, "cycle.safetensors")
    assert again.status_code == 201, again.text
    assert create_checkpoint(api, "cycle.safetensors").status_code == 400
    checkpoint_id = again.json()["data"]["checkpoint"]["id"]
    assert [item["id"] for item in checkpoints_named(api, "cycle.safetensors")] == [checkpoint_id]
    assert checkpoint_guards.holder("Lora/cycle.safetensors") == checkpoint_id
    body = {"endpoint_name": "cycle", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
    endpoint = api.post("/endpoints", body)
    assert endpoint.status_code == 200, endpoint.text
    assert api.post("/endpoints", body).status_code == 400
    assert endpoint_guards.holder("esd-async-cycle") == endpoint.json()["data"]["EndpointDeploymentJobId"]


def test_rename_moves_the_guard_and_delete_frees_it(api: Api) -> None:
    guards = api.services.checkpoints.names
    created = create_checkpoint(api, "before.safetensors")
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    checkpoint_id = data["checkpoint"]["id"]
    part = api.put_url(data["s3PresignUrl"]["before.safetensors"][0], b"weights")
    tags = {"before.safetensors": [{"ETag": part.headers["ETag"], "PartNumber": 1}]}
    completed = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags})
    assert completed.status_code == 200, completed.text

    renamed = api.put(f"/checkpoints/{checkpoint_id}", {"name": "after.safetensors"})

    assert renamed.status_code == 200, renamed.text
    assert guards.holder("Lora/before.safetensors") is None
    assert guards.holder("Lora/after.safetensors") == checkpoint_id
    assert create_checkpoint(api, "after.safetensors").status_code == 400
    assert create_checkpoint(api, "before.safetensors").status_code == 201
    assert api.delete("/checkpoints", {"checkpoint_id_list": [checkpoint_id]}).status_code == 204
    assert guards.holder("Lora/after.safetensors") is None


def test_guards_are_never_listed_nor_readable_as_records(api: Api) -> None:
    assert create_checkpoint(api, "hidden.safetensors").status_code == 201
    body = {"endpoint_name": "hidden", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
    assert api.post("/endpoints", body).status_code == 200

    assert [item["name"] for item in list_all(api, "/checkpoints", "checkpoints")] == [["hidden.safetensors"]]
    assert [item["endpoint_name"] for item in list_all(api, "/endpoints", "endpoints")] == ["esd-async-hidden"]
    guard_id = GUARD_PREFIX + "Lora/hidden.safetensors"
    with pytest.raises(NotFound):  # no route takes an id with a slash: ask the service itself
        api.services.checkpoints.get(api.services.users.actor(ADMIN), guard_id)
    assert api.delete("/checkpoints", {"checkpoint_id_list": [guard_id]}).status_code == 404
    assert api.services.checkpoints.names.holder("Lora/hidden.safetensors") is not None


def test_a_guard_left_by_a_crash_is_taken_over_once_stale(api: Api) -> None:
    """A guard whose owner was never written (the process died in between) blocks its name only for a while."""
    guards = api.services.checkpoints.names
    assert guards.claim("Lora/orphan.safetensors", "crashed-before-writing")
    refused = create_checkpoint(api, "orphan.safetensors")
    assert refused.status_code == 400 and message(refused) == f"orphan.safetensors {TAKEN}"

    guards.table.update({"id": GUARD_PREFIX + "Lora/orphan.safetensors"}, {CLAIMED: time.time() - STALE_AFTER_S - 1})
    created = create_checkpoint(api, "orphan.safetensors")

    assert created.status_code == 201, created.text
    assert guards.holder("Lora/orphan.safetensors") == created.json()["data"]["checkpoint"]["id"]
    assert create_checkpoint(api, "orphan.safetensors").status_code == 400  # a live holder is never taken over
