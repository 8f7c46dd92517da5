"""Over real HTTP against `python -m middleware_api serve`: first start, users and roles, a 20 MiB
multipart checkpoint upload through the signed URLs, and the data intact after a restart."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests
from support import ServerProcess, free_port, wait_until

MIB = 1 << 20


def _session(key: str, user: str | None) -> requests.Session:
    session = requests.Session()
    session.headers["x-api-key"] = key
    if user:
        session.headers["username"] = user
    return session


def test_serve_bootstrap_upload_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    server = ServerProcess(data_dir, port)
    try:
        key, password = server.printed("(shown once, only its hash is kept):"), server.printed("password (shown once):")
        assert key and password, server.banner
        assert key not in (data_dir / "secrets.json").read_text()
        url = server.url
        assert requests.get(f"{url}/ping", timeout=5).status_code == 403

        login = _session(key, None).post(f"{url}/login", json={"username": "admin", "password": password}, timeout=10)
        assert login.status_code == 200, login.text
        admin = _session(key, "admin")
        assert admin.post(f"{url}/roles", json={"role_name": "artist", "permissions": ["checkpoint:all"]}).ok
        created = admin.post(f"{url}/users", json={"username": "ana", "password": "ana-password", "roles": ["artist"]})
        assert created.status_code == 201, created.text
        ana = _session(key, "ana")

        payload = os.urandom(20 * MIB)
        part_size = 8 * MIB
        parts = [payload[offset : offset + part_size] for offset in range(0, len(payload), part_size)]
        body = {
            "checkpoint_type": "Lora",
            "filenames": [{"filename": "style.safetensors", "parts_number": len(parts)}],
            "params": {"message": "e2e"},
        }
        created = ana.post(f"{url}/checkpoints", json=body)
        assert created.status_code == 201, created.text
        data = created.json()["data"]
        checkpoint_id = data["checkpoint"]["id"]
        urls = data["s3PresignUrl"]["style.safetensors"]
        assert len(urls) == 3
        tags = []
        for number, (part_url, part) in enumerate(zip(urls, parts, strict=True), start=1):
            answer = requests.put(part_url, data=part, timeout=60)
            assert answer.status_code == 200, answer.text
            tags.append({"ETag": answer.headers["ETag"], "PartNumber": number})
        completed = ana.put(
            f"{url}/checkpoints/{checkpoint_id}",
            json={"status": "Active", "multi_parts_tags": {"style.safetensors": tags}},
        )
        assert completed.status_code == 200, completed.text
        assert completed.json()["data"]["checkpoint"]["status"] == "Active"

        listed = ana.get(f"{url}/checkpoints", params={"status": "Active"}).json()["data"]["checkpoints"]
        assert [item["name"] for item in listed] == [["style.safetensors"]]
        stored = data_dir / "blobs" / "objects" / "Lora" / "checkpoint" / "custom" / checkpoint_id / "style.safetensors"
        assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(payload).digest()

        renamed = ana.put(f"{url}/checkpoints/{checkpoint_id}", json={"name": "renamed.safetensors"})
        assert renamed.status_code == 200, renamed.text
    finally:
        server.stop()

    server = ServerProcess(data_dir, port)
    try:
        assert server.printed("(shown once, only its hash is kept):") is None
        assert server.printed("password (shown once):") is None
        ana = _session(key, "ana")
        listed = ana.get(f"{server.url}/checkpoints").json()["data"]["checkpoints"]
        assert [item["name"] for item in listed] == [["renamed.safetensors"]]
        users = _session(key, "admin").get(f"{server.url}/users").json()["data"]["users"]
        assert {user["username"] for user in users} == {"admin", "ana"}

        assert ana.delete(f"{server.url}/checkpoints", json={"checkpoint_id_list": [checkpoint_id]}).status_code == 204
        wait_until(lambda: not ana.get(f"{server.url}/checkpoints").json()["data"]["checkpoints"])
        assert not list((data_dir / "blobs" / "objects").rglob("*.safetensors"))
    finally:
        server.stop()
