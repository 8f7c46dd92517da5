"""The Cloud tab without a browser: it builds in this gradio (3.41 or 4.40) without network, and its handlers
(the plain functions the Blocks wire to) do the right calls against a real middleware.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ext_support import (
    ADMIN,
    ADMIN_PASSWORD,
    API_KEY,
    ENGINE_TIMEOUT_S,
    ROOT,
    ChildProcess,
    Engine,
    FaultyAdapter,
    MiB,
    Middleware,
    _clean_env,
    free_port,
    png_size,
    wait_until,
)

from aws_extension import config
from aws_extension.client import MiddlewareClient
from aws_extension.jobs import run_job
from aws_extension.ui import build_cloud_tab
from aws_extension.ui import handlers as h
from aws_extension.upload import upload_file


def _suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A WebUI-style models folder."""
    root = tmp_path / "models"
    for kind in ("Stable-diffusion", "Lora", "VAE"):
        (root / kind).mkdir(parents=True)
    return root


def make_session(
    url: str, username: str, password: str | None, tmp_path: Path, models: Path | None = None, **options: Any
) -> h.CloudSession:
    folders = {kind: models / kind for kind in ("Stable-diffusion", "Lora", "VAE")} if models else {}
    return h.CloudSession(
        config.Connection(url, API_KEY, username, password),
        model_folders=folders,
        image_dir=str(tmp_path / "images"),
        **options,
    )


@pytest.fixture
def admin(middleware: Middleware, tmp_path: Path, models: Path) -> Iterator[h.CloudSession]:
    session = make_session(middleware.url, ADMIN, ADMIN_PASSWORD, tmp_path, models)
    h.identify(session)
    yield session
    session.forget()


# -- building --------------------------------------------------------------------------------


def test_builds_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config_home: Path) -> None:
    import gradio as gr

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network call while building the UI: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    secret = "the-secret-key-" + _suffix()
    connection = config.Connection("http://127.0.0.1:9/prod", secret, "someone", "the-password-1")
    blocks = build_cloud_tab(connection=connection, models_dir=tmp_path)
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    for wanted in ("esd_save_connection", "esd_ckpt_table", "esd_up_start", "esd_ep_deploy", "esd_role_save"):
        assert wanted in ids
    for wanted in ("esd_user_save", "esd_ds_upload", "esd_tr_start", "esd_jobs_gallery", "esd_start_embedded"):
        assert wanted in ids
    page = json.dumps(blocks.get_config_file(), default=str)  # what every browser gets
    assert secret not in page and "the-password-1" not in page
    assert "http://127.0.0.1:9/prod" in page
    # the WebUI's call: no arguments, no saved connection
    assert isinstance(build_cloud_tab(), gr.Blocks)


def test_guards_follow_permissions(tmp_path: Path) -> None:
    session = h.CloudSession(config.Connection("http://127.0.0.1:9/prod", "k", "viewer"))
    blocks = build_cloud_tab(session)
    guards = blocks.esd_guards
    sections = [section.lstrip("!") for section, _ in guards.parts]
    assert set(sections) <= set(h.SECTIONS)

    def shown_by(permissions: frozenset[str] | None) -> dict[str, bool]:
        session.permissions = permissions
        updates = guards.updates(h.visibility(session))
        return {section: update["visible"] for (section, _), update in zip(guards.parts, updates, strict=True)}

    # unknown permissions: nothing hidden, no note
    assert all(visible == (not section.startswith("!")) for section, visible in shown_by(None).items())
    shown = shown_by(frozenset({"checkpoint:list"}))
    assert shown["checkpoints.list"] and not shown["!checkpoints.list"]
    assert not shown["checkpoints.upload"] and not shown["checkpoints.manage"] and not shown["checkpoints.url"]
    assert not shown["endpoints.list"] and shown["!endpoints.list"]
    assert not shown["users.edit"] and not shown["roles.delete"] and not shown["train.start"]


# -- connection ------------------------------------------------------------------------------


def test_sign_in_saves_privately_and_reads_permissions(middleware: Middleware, config_home: Path) -> None:
    session = h.CloudSession()
    assert h.connection_form(session).api_url == ""
    text = h.save_and_sign_in(session, middleware.url + "/", API_KEY, ADMIN, ADMIN_PASSWORD)
    assert "✓ Connection works" in text, text
    path = config.config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load_connection() == config.Connection(middleware.url, API_KEY, ADMIN, ADMIN_PASSWORD)
    assert {"checkpoint:all", "user:all"} <= set(session.permissions or ())
    assert all(h.visibility(session).values())
    assert f"as **{ADMIN}**" in h.session_summary(session)
    form = h.connection_form(h.CloudSession())
    assert (form.api_url, form.username, form.has_key, form.has_password) == (middleware.url, ADMIN, True, True)

    # an empty key and password keep the saved ones
    assert "✓ Connection works" in h.test_connection(session, middleware.url, "", ADMIN, "")
    wrong_key = h.test_connection(session, middleware.url, "not-the-key", ADMIN, "")
    assert wrong_key.startswith("**✗ api key failed:**"), wrong_key
    wrong_password = h.save_and_sign_in(session, middleware.url, "", ADMIN, "wrong-password")
    assert "✗ user failed:" in wrong_password and "Nothing was saved" in wrong_password
    assert config.load_connection().password == ADMIN_PASSWORD  # type: ignore[union-attr]
    unreachable = h.test_connection(session, f"http://127.0.0.1:{free_port()}/prod", "", ADMIN, "")
    assert "✗ reach failed:" in unreachable
    assert "must start with http" in h.test_connection(session, "ftp://x", "", ADMIN, "")
    assert h.forget_connection(session).startswith("✓")
    assert not path.exists() and session.connection is None


def test_refresh_session_reports_refusals(middleware: Middleware, tmp_path: Path) -> None:
    session = h.CloudSession(config.Connection(middleware.url, "wrong-key", ADMIN))
    assert "✗ the API key was refused" in h.refresh_session(session)
    nobody = h.CloudSession()
    nobody.connection = None
    assert "Not connected" in h.session_summary(nobody)


# -- checkpoints -----------------------------------------------------------------------------


def _tiny(folder: Path, name: str, size: int = 4096) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_checkpoints_filter_and_pages(admin: h.CloudSession, client: MiddlewareClient, tmp_path: Path) -> None:
    names = [f"page-{_suffix()}-{index}.pt" for index in range(3)]
    for name in names:
        upload_file(client, _tiny(tmp_path, name), "hypernetworks")
    first = h.list_checkpoints(admin, ["hypernetworks"], [], 2, None, "first")
    assert len(first.table.rows) == 2 and first.pager and first.pager.next_cursor
    assert first.info.startswith("Page 1 · 2 shown · more")
    assert {row[1] for row in first.table.rows} == {"hypernetworks"}
    second = h.list_checkpoints(admin, ["hypernetworks"], [], 2, first.pager, "next")
    assert second.pager and second.pager.page == 2 and len(second.table.rows) == 1
    assert {row[0] for row in first.table.rows + second.table.rows} == set(names)
    back = h.list_checkpoints(admin, ["hypernetworks"], [], 2, second.pager, "prev")
    assert back.table.rows == first.table.rows and back.pager and back.pager.page == 1
    assert h.list_checkpoints(admin, ["hypernetworks"], ["Initial"], 2).table.rows == []
    active = h.list_checkpoints(admin, ["hypernetworks"], ["Active"], 50)
    assert set(names) <= {row[0] for row in active.table.rows}
    assert all(choice.endswith(row[-1]) for choice, row in zip(active.choices, active.table.rows, strict=True))
    assert h.list_checkpoints(admin, ["nonsense"]).info.startswith("✗")


def test_upload_from_model_folder_with_progress(middleware: Middleware, tmp_path: Path, models: Path) -> None:
    adapter = FaultyAdapter(delay_s=0.15)

    def slow_blobs(connection: config.Connection) -> MiddlewareClient:
        api = MiddlewareClient.from_connection(connection)
        api.blob_session.mount("http://", adapter)
        return api

    session = make_session(middleware.url, ADMIN, ADMIN_PASSWORD, tmp_path, models, client_factory=slow_blobs)
    model = _tiny(models / "Stable-diffusion" / "sub", f"ui-upload-{_suffix()}.safetensors", 11 * MiB)
    files, note = h.local_model_files(session, "Stable-diffusion")
    shown = f"sub/{model.name}"
    assert shown in files and "1 Stable-diffusion files" in note
    assert h.local_model_files(session, "ControlNet") == (
        [],
        "No ControlNet folder is known here (folders found for: Lora, Stable-diffusion, VAE).",
    )
    options = {"part_size": 5 * MiB, "concurrency": 1}
    steps = list(h.upload_local_checkpoint(session, "Stable-diffusion", shown, poll_s=0.02, upload_options=options))
    fractions = [step.fraction for step in steps if step.fraction is not None]
    assert fractions[0] == 0.0 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0 < fraction < 1 for fraction in fractions), fractions
    assert "MiB of 11.0 MiB" in " ".join(step.text for step in steps)
    last = steps[-1]
    assert last.done and last.ok and last.text.startswith(f"✓ Uploaded {model.name} (11.0 MiB"), last.text
    listed = h.list_checkpoints(session, ["Stable-diffusion"], ["Active"], 100)
    assert model.name in {row[0] for row in listed.table.rows}
    assert sum(adapter.attempts.values()) == 3  # three 5 MiB parts

    # only files the folder listing shows can be uploaded
    outside = _tiny(tmp_path, "secret.safetensors")
    for name in (str(outside), "../../secret.safetensors", ""):
        (refused,) = h.upload_local_checkpoint(session, "Stable-diffusion", name)
        assert refused.done and refused.ok is False and refused.text.startswith("✗"), refused.text


def test_closing_the_upload_cancels_it(middleware: Middleware, tmp_path: Path, models: Path) -> None:
    adapter = FaultyAdapter(delay_s=0.5)

    def slow_blobs(connection: config.Connection) -> MiddlewareClient:
        api = MiddlewareClient.from_connection(connection)
        api.blob_session.mount("http://", adapter)
        return api

    session = make_session(middleware.url, ADMIN, ADMIN_PASSWORD, tmp_path, models, client_factory=slow_blobs)
    model = _tiny(models / "Lora", f"ui-cancel-{_suffix()}.safetensors", 11 * MiB)
    steps = h.upload_local_checkpoint(
        session, "Lora", model.name, poll_s=0.05, upload_options={"part_size": 5 * MiB, "concurrency": 1}
    )
    assert next(steps).fraction == 0.0
    steps.close()  # what gradio's Cancel does to the generator

    def gone() -> bool:
        rows = h.list_checkpoints(session, ["Lora"], [], 100).table.rows
        return model.name not in {row[0] for row in rows}

    wait_until(gone, timeout_s=15, interval_s=0.2)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def test_upload_by_url_rename_and_delete(admin: h.CloudSession, file_server: tuple[str, Path]) -> None:
    base, folder = file_server
    name = f"ui-url-{_suffix()}.safetensors"
    _tiny(folder, name)
    assert h.upload_checkpoint_urls(admin, "VAE", "").startswith("✗ enter at least one URL")
    text = h.upload_checkpoint_urls(admin, "VAE", f"\n{base}/{name}\n", "from the test")
    assert text.startswith("✓ Checkpoint ") and "being downloaded" in text

    def active() -> str | None:
        view = h.list_checkpoints(admin, ["VAE"], ["Active"], 100)
        return next((choice for choice in view.choices if choice.startswith(name)), None)

    label = wait_until(active, timeout_s=20, interval_s=0.2)
    new_name = f"ui-renamed-{_suffix()}.safetensors"
    assert h.rename_checkpoint(admin, [label, label], new_name).startswith("✗ select exactly one")
    assert h.rename_checkpoint(admin, [label], new_name).startswith("✓")
    rows = h.list_checkpoints(admin, ["VAE"], [], 100).table.rows
    assert new_name in {row[0] for row in rows} and name not in {row[0] for row in rows}
    assert h.delete_checkpoints(admin, []).startswith("✗ select")
    assert h.delete_checkpoints(admin, [label]) == "✓ Deleted 1 checkpoint(s)."
    assert new_name not in {row[0] for row in h.list_checkpoints(admin, ["VAE"], [], 100).table.rows}


# -- users, roles, permissions ---------------------------------------------------------------


def test_roles_users_and_what_a_viewer_may_do(admin: h.CloudSession, middleware: Middleware, tmp_path: Path) -> None:
    role, user, password = f"ui-viewer-{_suffix()}", f"ui-user-{_suffix()}", "viewer-pass-1"
    assert h.save_role(admin, role, ["checkpoint:list"]) == f"✓ Role {role} created with 1 permission(s)."
    assert h.save_role(admin, role, ["checkpoint:list", "inference:list"]).startswith(f"✓ Role {role} updated")
    assert h.save_role(admin, role, ["checkpoint:list"]).startswith(f"✓ Role {role} updated")
    assert role in h.list_roles(admin).choices
    assert h.save_user(admin, user, password, ["no-such-role"]) == '✗ user roles "no-such-role" not exist'
    assert h.save_user(admin, user, password, [role]).startswith(f"✓ User {user} created")
    users = h.list_users(admin)
    assert [row[1] for row in users.table.rows if row[0] == user] == [role]

    viewer = make_session(middleware.url, user, password, tmp_path)
    assert h.identify(viewer) == ""
    assert viewer.permissions == frozenset({"checkpoint:list"})
    shown = h.visibility(viewer)
    assert shown["checkpoints.list"] and not shown["checkpoints.manage"] and not shown["checkpoints.upload"]
    assert not shown["endpoints.list"] and not shown["users.list"] and not shown["jobs.list"]
    assert not h.list_checkpoints(viewer).info.startswith("✗")
    refused = h.delete_checkpoints(viewer, ["some-id"])
    assert refused == f"✗ user {user} lacks the permission checkpoint:all; ask an administrator for it"
    (step,) = h.upload_local_checkpoint(viewer, "Lora", "x.safetensors")
    assert step.text.startswith(f"✗ user {user} lacks the permission checkpoint:all")
    assert h.list_endpoints(viewer).info.startswith("✗ user")

    # without the password the permissions stay unknown: nothing is hidden, the middleware refuses
    unknown = make_session(middleware.url, user, None, tmp_path)
    assert "permissions unknown" in h.identify(unknown)
    assert unknown.permissions is None and all(h.visibility(unknown).values())
    answer = h.delete_checkpoints(unknown, ["some-id"])
    assert answer.startswith(f"✗ User {user} has no permissions") and "checkpoint:all" in answer

    assert h.delete_users(admin, [user]) == f"✓ Deleted user(s) {user}."
    assert h.delete_roles(admin, [role]) == f"✓ Deleted role(s) {role}."
    assert role not in h.list_roles(admin).choices
    assert h.delete_roles(admin, ["IT Operator"]) == "✗ cannot delete default role"


# -- endpoints -------------------------------------------------------------------------------


def test_deploy_watch_and_delete_an_endpoint(admin: h.CloudSession) -> None:
    name = f"ui{_suffix()}"
    assert h.deploy_endpoint(admin, "Async", name, "ml.g5.2xlarge", 1, False, 0, 1, []).startswith("✗ choose the roles")
    text = h.deploy_endpoint(admin, "Async", name, "ml.g5.2xlarge", 1, False, 0, 1, ["IT Operator"])
    assert text.startswith(f"✓ Deploying esd-async-{name}"), text
    views = list(h.watch_endpoints(admin, poll_s=0.2, timeout_s=60))
    rows = {row[0]: row for row in views[-1].table.rows}
    assert rows[f"esd-async-{name}"][2] == "InService", views[-1]
    assert views[-1].info.endswith("all settled")
    assert f"esd-async-{name}" in views[-1].choices
    assert h.delete_endpoints(admin, [f"esd-async-{name}"]) == f"✓ Deleting esd-async-{name}."
    wait_until(lambda: f"esd-async-{name}" not in h.list_endpoints(admin).choices, timeout_s=30, interval_s=0.2)
    assert h.delete_endpoints(admin, ["esd-async-none"]) == "✗ endpoint esd-async-none not found"


# -- inference history -----------------------------------------------------------------------


def test_history_lists_jobs_and_opens_images(
    admin: h.CloudSession, client: MiddlewareClient, endpoints: Any, tmp_path: Path
) -> None:
    results = [
        run_job(
            client,
            task_type="txt2img",
            payload={"prompt": f"history {index}", "width": 64, "height": 48},
            models=endpoints.models,
            endpoint_name=endpoints.names["Async"],
            poll_s=0.5,
        )
        for index in range(2)
    ]
    view = h.list_jobs(admin, ["succeed"], ["txt2img"], 50)
    rows = {row[-1]: row for row in view.table.rows}
    for result in results:
        row = rows[result.job_id]
        assert row[1:4] == ["txt2img", "Async", "succeed"] and row[4] == endpoints.names["Async"]
        assert float(row[5]) >= 0 and row[6] == str(len(result.images))
    paged = h.list_jobs(admin, [], [], 1)
    assert len(paged.table.rows) == 1 and paged.pager and paged.pager.next_cursor
    assert h.list_jobs(admin, ["failed"], ["rembg"], 50).table.rows == []

    label = next(choice for choice in view.choices if choice.endswith(results[0].job_id))
    opened = h.open_job(admin, label)
    assert len(opened.images) == len(results[0].images)
    for path in opened.images:
        assert Path(path).is_relative_to(tmp_path / "images") and png_size(Path(path).read_bytes()) == (64, 48)
    assert f"**Job {results[0].job_id}**" in opened.info and "**succeed**" in opened.info
    assert "history 0" in opened.info  # the engine's infotext
    assert h.open_job(admin, "").info.startswith("✗ select a job")
    assert h.open_job(admin, "no-such-job").info == "✗ inference with id no-such-job not found"

    assert h.delete_jobs(admin, [label]) == "✓ Deleted 1 job(s)."
    assert results[0].job_id not in {row[-1] for row in h.list_jobs(admin, [], [], 100).table.rows}


# -- datasets and training -------------------------------------------------------------------


def _kohya_double() -> Any:
    path = ROOT / "tests" / "middleware" / "kohya_double.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("esd_kohya_double", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "write_kohya_double", None)


class TrainingMiddleware(ChildProcess):
    """A middleware whose local trainer runs the kohya double."""

    def __init__(self, python: str, data_dir: Path, engine_url: str, kohya_dir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/prod"
        env = _clean_env(
            ESD_API_KEY=API_KEY,
            ESD_ADMIN_PASSWORD=ADMIN_PASSWORD,
            ESD_ENGINE_URL=engine_url,
            ESD_ENGINE_TIMEOUT_S=str(ENGINE_TIMEOUT_S),
            ESD_KOHYA_DIR=str(kohya_dir),
        )
        command = [python, "-m", "middleware_api", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        super().__init__(command, env)
        self.wait_ready(f"{self.url}/ping")


@pytest.fixture(scope="module")
def trainer(
    middleware_python: str, engine: Engine, middleware: Middleware, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainingMiddleware]:
    probe = MiddlewareClient(middleware.url, API_KEY, ADMIN)
    try:
        probe.list_datasets(limit=1)
        probe.list_trainings(limit=1)
    except Exception as exc:  # an older middleware
        pytest.skip(f"this middleware has no /datasets or /trainings routes yet: {exc}")
    finally:
        probe.close()
    write = _kohya_double()
    if write is None:
        pytest.skip("tests/middleware/kohya_double.py (the kohya stand-in) is missing")
    kohya_dir = write(tmp_path_factory.mktemp("kohya") / "sd-scripts")
    server = TrainingMiddleware(middleware_python, tmp_path_factory.mktemp("training-data"), engine.url, kohya_dir)
    yield server
    server.stop()


def test_dataset_upload_training_and_its_lora(trainer: TrainingMiddleware, tmp_path: Path) -> None:
    session = make_session(trainer.url, ADMIN, ADMIN_PASSWORD, tmp_path)
    h.identify(session)
    base = _tiny(tmp_path / "base", f"base-{_suffix()}.safetensors")
    upload_file(session.client(), base, "Stable-diffusion")
    folder = tmp_path / "cats"
    files = []
    for index in range(2):
        files.append(_tiny(folder, f"cat{index}.png", 2048))
        caption = folder / f"cat{index}.txt"
        caption.write_text(f"a photo of cat {index}", "utf-8")
        files.append(caption)
    files.append(_tiny(folder, "notes.md", 10))
    dataset = f"ui-cats-{_suffix()}"
    steps = list(h.upload_dataset(session, dataset, "two cats", [str(path) for path in files]))
    assert (
        steps[-1].ok
        and steps[-1].text == f"✓ Dataset {dataset} is ready: 2 image(s), 2 caption(s); left out: notes.md."
    )
    assert [step.fraction for step in steps if step.fraction is not None][-1] == 1.0
    datasets = h.list_datasets(session)
    assert [row[1] for row in datasets.table.rows if row[0] == dataset] == ["Enabled"]
    (refused,) = h.upload_dataset(session, "ui-empty", "", [str(folder / "cat0.txt")])
    assert refused.text.startswith("✗ choose the dataset's images")

    models, names, note = h.training_choices(session)
    assert base.name in models and dataset in names, note
    lora = f"ui-lora-{_suffix()}"
    assert h.start_training(session, "", dataset, "sd_1_5", "ml.g5.2xlarge", lora, 1, 1).startswith("✗ choose")
    started = h.start_training(session, base.name, dataset, "sd_1_5", "ml.g5.2xlarge", lora, 1, 1)
    assert started.startswith("✓ Training "), started
    trainings = h.list_trainings(session)
    label = next(choice for choice in trainings.choices if choice.startswith(f"{lora}.safetensors"))
    messages = list(h.follow_training(session, label, poll_s=0.2, timeout_s=60))
    assert messages[-1].startswith(f"✓ Training {h._id_of(label)} Completed: the LoRA {lora}.safetensors"), messages
    loras = h.list_checkpoints(session, ["Lora"], ["Active"], 100)
    assert f"{lora}.safetensors" in {row[0] for row in loras.table.rows}

    assert h.delete_datasets(session, [dataset]) == f"✓ Deleted dataset(s) {dataset}."
    assert dataset not in h.list_datasets(session).choices


# -- the standalone page's command line ------------------------------------------------------


def test_standalone_connection_comes_from_env_or_saved(config_home: Path) -> None:
    from aws_extension.__main__ import parse_args, resolve_connection

    args = parse_args(["--api-url", "http://127.0.0.1:8080/", "--username", "ann"])
    assert resolve_connection(args, {"ESD_API_KEY": "env-key"}) == config.Connection(
        "http://127.0.0.1:8080/prod", "env-key", "ann", None
    )
    with pytest.raises(config.ConfigError, match="set ESD_API_KEY"):
        resolve_connection(args, {})
    config.save_connection(config.Connection("http://127.0.0.1:8080/prod", "saved-key", "ann", "ann-password"))
    assert resolve_connection(args, {}) == config.Connection(
        "http://127.0.0.1:8080/prod", "saved-key", "ann", "ann-password"
    )
    other_user = parse_args(["--api-url", "http://127.0.0.1:8080/prod", "--username", "bob"])
    assert resolve_connection(other_user, {}).password is None  # type: ignore[union-attr]
    other_url = parse_args(["--api-url", "http://elsewhere:8080/prod"])
    with pytest.raises(config.ConfigError):
        resolve_connection(other_url, {})  # the saved key belongs to another deployment
    assert resolve_connection(parse_args([]), {}) == config.load_connection()
    with pytest.raises(SystemExit):
        parse_args(["--api-key", "x"])  # never a flag
