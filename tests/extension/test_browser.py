"""Headless Chromium drives the standalone Cloud page (`python -m aws_extension`) against a real middleware.

The page runs in this test's Python (gradio 3.41.2 in the A1111 environment, 4.40 in Forge's):
sign in, create a role and a user, upload a small checkpoint from `--models-dir` and see it
listed, deploy a local endpoint and see it InService, open a finished job's image, and see a
user with only `checkpoint:list` get no upload or delete controls. One screenshot per sub-tab
goes to `$ESD_SCREENSHOT_DIR` (else a temporary folder).

Needs Debian's `chromium` (`/usr/bin/chromium`) and Playwright's Python package
(`requirements/browser.txt`); skipped with the reason when either is missing.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ext_support import ADMIN, ADMIN_PASSWORD, API_KEY, ROOT, ChildProcess, Middleware, free_port, wait_until

from aws_extension.client import MiddlewareClient
from aws_extension.jobs import run_job

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_START_S = 120  # importing gradio alone takes ~10 s on a cold disk
STEP_MS = 30_000
DEPLOY_MS = 90_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:
    pytest.skip(
        "Playwright's Python package is missing: pip install -r requirements/browser.txt", allow_module_level=True
    )


class StandalonePage(ChildProcess):
    """`python -m aws_extension --api-url … --port P --models-dir D`, the key in ESD_API_KEY."""

    def __init__(self, api_url: str, models_dir: Path, config_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {name: value for name, value in os.environ.items() if not name.startswith("ESD_")}
        env.update(
            ESD_API_KEY=API_KEY,
            ESD_EXTENSION_CONFIG=str(config_file),
            GRADIO_ANALYTICS_ENABLED="False",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        command = [sys.executable, "-m", "aws_extension", "--api-url", api_url, "--port", str(self.port)]
        super().__init__([*command, "--models-dir", str(models_dir)], env)
        self.wait_ready(self.url, timeout_s=PAGE_START_S)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("webui-models")
    (models / "Lora").mkdir()
    path = models / "Stable-diffusion" / f"browser-{uuid.uuid4().hex[:6]}.safetensors"
    path.parent.mkdir()
    path.write_bytes(os.urandom(300_000))
    return path


@pytest.fixture(scope="module")
def page_server(
    middleware: Middleware, model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandalonePage]:
    config_file = tmp_path_factory.mktemp("page-config") / "connection.json"
    server = StandalonePage(middleware.url, model_file.parent.parent, config_file)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("ESD_SCREENSHOT_DIR")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(page_server: StandalonePage) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        opened = context.new_page()
        opened.set_default_timeout(STEP_MS)
        opened.goto(page_server.url)
        expect(el(opened, "esd_summary")).to_contain_text("Connected to", timeout=STEP_MS)
        yield opened
        browser.close()


# -- helpers ---------------------------------------------------------------------------------


def el(page: Page, elem_id: str) -> Any:
    """The element of `elem_id` (gradio 3 puts a Markdown's id on its wrapper and on itself: the first)."""
    return page.locator(f"#{elem_id}").first


def fill(page: Page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} :is(input, textarea)").first.fill(text)


def tab(page: Page, name: str) -> None:
    page.locator("#esd_tabs button", has_text=name).first.click()


def choose(page: Page, elem_id: str, option: str) -> None:
    """Pick an option of a gradio Dropdown (3.41 and 4.x render it alike)."""
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f"#{elem_id} ul.options li", has_text=option).first.click()
    page.keyboard.press("Escape")


def check(page: Page, elem_id: str, label: str) -> None:
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    page.locator(f"#{elem_id} label").filter(has_text=exact).first.click()


def shot(page: Page, folder: Path, name: str) -> None:
    page.wait_for_timeout(1500)  # let pending updates (a tab's own refresh) land first
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def row(page: Page, table: str, text: str) -> Any:
    return page.locator(f"#{table} tr", has_text=text).first


# -- the walk through the tabs ---------------------------------------------------------------


def test_walk_through_the_tabs(page: Page, middleware: Middleware, model_file: Path, screenshots: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    role, user, user_password = f"browser-role-{suffix}", f"browser-user-{suffix}", f"browser-pass-{suffix}"
    endpoint = f"esd-async-br{suffix}"

    # sign in as the admin
    fill(page, "esd_username", ADMIN)
    fill(page, "esd_password", ADMIN_PASSWORD)
    page.click("#esd_save_connection")
    expect(el(page, "esd_connection_result")).to_contain_text("Connection works")
    expect(el(page, "esd_summary")).to_contain_text(f"as {ADMIN}")
    shot(page, screenshots, "1-connection")

    # a role with one permission, and a user holding it
    tab(page, "Users and roles")
    expect(el(page, "esd_roles_table")).to_contain_text("IT Operator")
    fill(page, "esd_role_name", role)
    check(page, "esd_role_permissions", "checkpoint:list")
    page.click("#esd_role_save")
    expect(el(page, "esd_role_result")).to_contain_text(f"✓ Role {role} created")
    expect(el(page, "esd_roles_table")).to_contain_text(role)
    fill(page, "esd_user_name", user)
    fill(page, "esd_user_password", user_password)
    choose(page, "esd_user_roles", role)
    page.click("#esd_user_save")
    expect(el(page, "esd_user_result")).to_contain_text(f"✓ User {user} created")
    expect(row(page, "esd_users_table", user)).to_contain_text(role)
    shot(page, screenshots, "2-users-and-roles")

    # upload the model file from --models-dir, see it listed
    tab(page, "Checkpoints")
    page.click("#esd_up_files_refresh")
    expect(el(page, "esd_up_files_note")).to_contain_text("1 Stable-diffusion files")
    page.click("#esd_up_start")
    expect(el(page, "esd_up_status")).to_contain_text(f"✓ Uploaded {model_file.name}")
    expect(row(page, "esd_ckpt_table", model_file.name)).to_contain_text("Active")
    shot(page, screenshots, "3-checkpoints")

    # deploy a local endpoint and follow it to InService
    tab(page, "Endpoints")
    fill(page, "esd_ep_name", f"br{suffix}")
    page.locator("#esd_ep_autoscaling input").uncheck()
    choose(page, "esd_ep_roles", "IT Operator")
    page.click("#esd_ep_deploy")
    expect(el(page, "esd_ep_deploy_result")).to_contain_text(f"✓ Deploying {endpoint}")
    expect(row(page, "esd_ep_table", endpoint)).to_contain_text("InService", timeout=DEPLOY_MS)
    shot(page, screenshots, "4-endpoints")

    # a job on it, then its image in the history
    client = MiddlewareClient(middleware.url, API_KEY, ADMIN)
    try:
        result = run_job(
            client,
            task_type="txt2img",
            payload={"prompt": "a browser test", "width": 64, "height": 64},
            models={"Stable-diffusion": [model_file.name]},
            endpoint_name=endpoint,
            poll_s=0.5,
            timeout_s=60,
        )
    finally:
        client.close()
    tab(page, "Inference history")
    page.click("#esd_jobs_refresh")
    expect(row(page, "esd_jobs_table", result.job_id)).to_contain_text("succeed")
    row(page, "esd_jobs_table", result.job_id).locator("td").first.click(force=True)
    expect(page.locator("#esd_jobs_selection input")).to_have_value(re.compile(re.escape(result.job_id)))
    page.click("#esd_jobs_open")
    expect(el(page, "esd_jobs_detail")).to_contain_text(f"Job {result.job_id}")
    image = page.locator("#esd_jobs_gallery img").first
    expect(image).to_be_visible()
    wait_until(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), timeout_s=10)
    shot(page, screenshots, "5-inference-history")

    tab(page, "Datasets and training")
    expect(el(page, "esd_ds_info")).not_to_have_text("Not loaded yet.")
    shot(page, screenshots, "6-datasets-and-training")

    # the user with only checkpoint:list sees the list, but no upload or delete
    tab(page, "Connection")
    fill(page, "esd_username", user)
    fill(page, "esd_password", user_password)
    page.click("#esd_save_connection")
    expect(el(page, "esd_summary")).to_contain_text(f"as {user}")
    tab(page, "Checkpoints")
    page.click("#esd_ckpt_refresh")
    # it may list (the admin's checkpoints belong to IT Operator, so it sees none of them)
    expect(el(page, "esd_ckpt_info")).to_have_text("Page 1 · 0 shown")
    expect(el(page, "esd_up_start")).to_be_hidden()
    expect(el(page, "esd_ckpt_delete")).to_be_hidden()
    expect(el(page, "esd_url_start")).to_be_hidden()
    shot(page, screenshots, "7-checkpoints-list-only")
    tab(page, "Endpoints")
    expect(page.get_by_text("You may not list endpoints")).to_be_visible()
    expect(el(page, "esd_ep_deploy")).to_be_hidden()


def test_page_serves_no_secret(page_server: StandalonePage) -> None:
    """The page's config (sent to every browser) holds neither the API key nor a password."""
    config = requests.get(page_server.url + "config", timeout=10).text
    assert API_KEY not in config
    assert ADMIN_PASSWORD not in config
