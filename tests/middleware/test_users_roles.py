"""Contract tests of ping, users, roles, login and tokens on both backends."""

from __future__ import annotations

from support import ADMIN, ADMIN_PASSWORD, API_KEY, Api

from middleware_api import API_VERSION


def test_ping_answers_pong_with_version(api: Api) -> None:
    response = api.get("/ping", user=None)
    assert response.status_code == 200
    assert response.json() == {"statusCode": 200, "message": "pong"}
    assert response.headers["x-api-version"] == API_VERSION


def test_default_roles_exist_with_every_permission(api: Api) -> None:
    roles = {role["role_name"]: role for role in api.get("/roles").json()["data"]["roles"]}
    assert {"IT Operator", "byoc"} <= set(roles)
    assert "checkpoint:all" in roles["IT Operator"]["permissions"]
    assert len(roles["byoc"]["permissions"]) == 6


def test_create_role_and_user_then_list_masks_passwords(api: Api) -> None:
    created = api.post("/roles", {"role_name": "artist", "permissions": ["checkpoint:all", "inference:all"]})
    assert created.status_code == 201
    assert created.json() == {"statusCode": 201, "message": "role created"}
    created = api.post("/users", {"username": "alice", "password": "alice-password", "roles": ["artist"]})
    assert created.status_code == 201, created.text
    users = {user["username"]: user for user in api.get("/users").json()["data"]["users"]}
    assert users["alice"] == {
        "username": "alice",
        "roles": ["artist"],
        "creator": ADMIN,
        "permissions": ["checkpoint:all", "inference:all"],
        "password": "********",
    }
    assert all(user["password"] == "********" for user in users.values())


def test_passwords_are_stored_as_salted_scrypt_hashes(api: Api) -> None:
    api.make_user("bob", ["byoc"], password="same-password")
    api.make_user("carol", ["byoc"], password="same-password")
    bob, carol = api.services.users.get("bob"), api.services.users.get("carol")
    assert bob is not None and carol is not None
    assert bob["password_hash"].startswith("scrypt$")
    assert "same-password" not in bob["password_hash"]
    assert bob["password_hash"] != carol["password_hash"]


def test_missing_properties_use_api_gateway_wording(api: Api) -> None:
    response = api.delete("/roles", {})
    assert response.status_code == 400
    assert 'object has missing required properties (["role_name_list"])' in response.json()["message"]
    response = api.delete("/users", {"user_name_list": []})
    assert response.status_code == 400
    assert "required minimum: 1" in response.json()["message"]


def test_unknown_role_is_refused(api: Api) -> None:
    response = api.post("/users", {"username": "dave", "password": "dave-password", "roles": ["ghost"]})
    assert response.status_code == 400
    assert response.json()["message"] == 'user roles "ghost" not exist'


def test_it_operator_cannot_be_deleted(api: Api) -> None:
    response = api.delete("/roles", {"role_name_list": ["IT Operator"]})
    assert response.status_code == 400
    assert response.json()["message"] == "cannot delete default role"


def test_deleting_a_role_takes_it_from_users(api: Api) -> None:
    api.make_role("temp", ["checkpoint:list"])
    api.make_user("erin", ["temp", "byoc"])
    assert api.delete("/roles", {"role_name_list": ["temp"]}).status_code == 204
    assert api.services.users.get("erin")["roles"] == ["byoc"]  # type: ignore[index]


def test_a_user_cannot_grant_permissions_it_does_not_hold(api: Api) -> None:
    api.make_role("user-admin", ["user:all", "role:all"])
    api.make_user("frank", ["user-admin"])
    response = api.post("/roles", {"role_name": "sneaky", "permissions": ["train:all"]}, user="frank")
    assert response.status_code == 403
    assert "train:all" in response.json()["message"]
    response = api.post("/users", {"username": "gina", "password": "gina-password", "roles": ["byoc"]}, user="frank")
    assert response.status_code == 403
    ok = api.post("/roles", {"role_name": "viewers", "permissions": ["user:all"]}, user="frank")
    assert ok.status_code == 201


def test_initial_only_bootstraps_an_empty_deployment(api: Api) -> None:
    response = api.post(
        "/users",
        {"username": "mallory", "password": "mallory-pass", "roles": ["IT Operator"], "initial": True},
        user=None,
    )
    assert response.status_code == 401
    assert api.services.users.get("mallory") is None


def test_initial_creates_the_first_user_without_a_username(tmp_path) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from middleware_api.app import create_app
    from middleware_api.container import build_services
    from middleware_api.settings import Settings

    services = build_services(Settings(data_dir=tmp_path, api_key=API_KEY))
    client = TestClient(create_app(services))
    body = {"username": "root", "password": "root-password", "roles": ["IT Operator"], "initial": True}
    response = client.post("/prod/users", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 201
    again = client.post("/prod/users", json={**body, "username": "root2"}, headers={"x-api-key": API_KEY})
    assert again.status_code == 401
    services.close()


def test_login_checks_credentials_and_never_returns_the_password(api: Api) -> None:
    ok = api.post("/login", {"username": ADMIN, "password": ADMIN_PASSWORD}, user=None)
    assert ok.status_code == 200
    assert ok.json()["data"]["user"]["username"] == ADMIN
    assert ADMIN_PASSWORD not in ok.text
    wrong = api.post("/login", {"username": ADMIN, "password": "not-the-password"}, user=None)
    unknown = api.post("/login", {"username": "nobody", "password": "not-the-password"}, user=None)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"] == "invalid username or password"


def test_update_user_roles_and_own_password(api: Api) -> None:
    api.make_user("hank", ["byoc"])
    updated = api.post("/users", {"username": "hank", "roles": ["IT Operator"]})
    assert updated.status_code == 200
    assert api.services.users.get("hank")["roles"] == ["IT Operator"]  # type: ignore[index]
    own = api.post("/users", {"username": "hank", "roles": ["IT Operator"], "password": "new-password-9"}, user="hank")
    assert own.status_code == 200
    assert api.post("/login", {"username": "hank", "password": "new-password-9"}, user=None).status_code == 200


def test_short_password_is_refused(api: Api) -> None:
    response = api.post("/users", {"username": "ivan", "password": "short", "roles": ["byoc"]})
    assert response.status_code == 400
    assert "at least 8" in response.json()["message"]


def test_cannot_delete_yourself(api: Api) -> None:
    response = api.delete("/users", {"user_name_list": [ADMIN]})
    assert response.status_code == 400


def test_list_with_only_list_permission_shows_own_creations(api: Api) -> None:
    api.make_role("lister", ["user:list", "user:create", "role:list"])
    api.make_user("judy", ["lister"])
    api.make_user("karl", ["byoc"])
    created = api.post("/users", {"username": "leo", "password": "leo-password", "roles": ["lister"]}, user="judy")
    assert created.status_code == 201
    names = {user["username"] for user in api.get("/users", user="judy").json()["data"]["users"]}
    assert names == {"judy", "leo"}
    roles = {role["role_name"] for role in api.get("/roles", user="judy").json()["data"]["roles"]}
    assert roles == {"lister"}


def test_users_list_paginates_without_short_pages(api: Api) -> None:
    for index in range(7):
        api.make_user(f"user{index}", ["byoc"])
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        params = {"limit": 3} | ({"exclusive_start_key": cursor} if cursor else {})
        data = api.get("/users", params=params).json()["data"]
        sizes.append(len(data["users"]))
        seen += [user["username"] for user in data["users"]]
        cursor = data["last_evaluated_key"]
        if cursor is None:
            break
    assert sizes == [3, 3, 2]
    assert sorted(seen) == sorted({*(f"user{index}" for index in range(7)), ADMIN})


def test_bad_cursor_and_page_size_are_400(api: Api) -> None:
    assert api.get("/users", params={"exclusive_start_key": "!!!"}).status_code == 400
    assert api.get("/users", params={"limit": 0}).status_code == 400
    assert api.get("/users", params={"limit": 100000}).status_code == 400


def test_personal_token_acts_as_its_user_whatever_the_header_says(api: Api) -> None:
    api.make_role("viewer", ["checkpoint:list"])
    api.make_user("mia", ["viewer"])
    created = api.post("/tokens", {"name": "laptop"}, user="mia")
    assert created.status_code == 201
    token = created.json()["data"]["token"]["token"]
    assert token.startswith("esd_pat_")
    stored = api.services.tables["users"].get({"kind": "token", "sort_key": token})
    assert stored is None  # only the digest is a key
    as_admin = api.get("/users", key=token, user=ADMIN)
    assert as_admin.status_code == 403
    assert "User mia" in as_admin.json()["message"]
    listed = api.get("/tokens", key=token, user=None).json()["data"]["tokens"]
    assert [item["name"] for item in listed] == ["laptop"]
    assert token not in str(listed)
    assert api.post("/login", {"username": "mia", "password": "user-password-1"}, key=token).status_code == 403
    token_id = listed[0]["token_id"]
    assert api.delete("/tokens", {"token_id_list": [token_id]}, key=token, user=None).status_code == 204
    assert api.get("/tokens", key=token, user=None).status_code == 403


def test_deleting_a_user_revokes_its_tokens(api: Api) -> None:
    api.make_user("nina", ["byoc"])
    token = api.post("/tokens", {"name": "ci"}, user="nina").json()["data"]["token"]["token"]
    assert api.get("/ping", key=token, user=None).status_code == 200
    assert api.delete("/users", {"user_name_list": ["nina"]}).status_code == 204
    assert api.get("/ping", key=token, user=None).status_code == 403
