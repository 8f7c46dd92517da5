"""The Cloud tab's gradio Blocks: sub-tabs wired to the plain handlers of `aws_extension.ui.handlers`.

Written for gradio 3.41.2 (AUTOMATIC1111) and 4.40 (Forge) alike: no `.style()`, updates
through `gr.update`, list values as `{"headers", "data"}`, generators for long actions (the
queue is on in the WebUI and in the standalone page). Building does no network call; data
loads on the page's load event, when a sub-tab is selected, or on a button.

No `from __future__ import annotations` here: gradio finds `gr.SelectData` parameters by
their (evaluated) annotation.
"""

import functools
import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from aws_extension.ui import handlers as h
from aws_extension.ui.local_models import CHECKPOINT_TYPES

log = logging.getLogger("aws_extension.ui")

PAGE_SIZES = ["10", "20", "50", "100"]
STREAM_TABLES = int(gr.__version__.split(".")[0]) < 4  # see `_endpoints_tab.follow`
CSS = ".esd-denied p { font-style: italic; }"  # only the standalone page uses it (the WebUI keeps its own)


class _Guards:
    """Components shown only to users with a permission (by `handlers.SECTIONS` key), and per-tab notes."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, Any]] = []

    def add(self, section: str, component: Any) -> Any:
        self.parts.append((section, component))
        return component

    def note(self, section: str, text: str) -> Any:
        """A note shown when the user lacks `section` (the inverse of the guarded parts)."""
        component = gr.Markdown(f"🔒 {text}", visible=False, elem_classes=["esd-denied"])
        self.parts.append(("!" + section, component))
        return component

    @property
    def components(self) -> list[Any]:
        return [component for _, component in self.parts]

    def updates(self, flags: dict[str, bool]) -> list[Any]:
        result = []
        for section, _ in self.parts:
            if section.startswith("!"):
                result.append(gr.update(visible=not flags[section[1:]]))
            else:
                result.append(gr.update(visible=flags[section]))
        return result


def _small(label: str, elem_id: str, variant: str = "secondary") -> Any:
    return gr.Button(label, elem_id=elem_id, size="sm", variant=variant)


def _table(headers: list[str], elem_id: str) -> Any:
    return gr.Dataframe(
        value={"headers": headers, "data": []},
        headers=headers,
        datatype="str",
        interactive=False,
        wrap=True,
        type="array",
        elem_id=elem_id,
    )


def _list_updates(view: h.ListView) -> tuple[Any, Any, str]:
    """(table, selection dropdown emptied, info) updates from a ListView."""
    return gr.update(value=view.table.as_value()), gr.update(choices=view.choices, value=[]), view.info


def build(session: h.CloudSession, *, engine_url: str | None = None) -> gr.Blocks:
    """The Cloud tab's Blocks for `session` (see `aws_extension.ui.build_cloud_tab`)."""
    guards = _Guards()
    form = h.connection_form(session)
    with gr.Blocks(analytics_enabled=False, title="ESD Cloud", css=CSS) as blocks:
        initial = (
            f"Saved connection: `{form.api_url}` as **{form.username or 'no user'}** (not checked yet)."
            if form.api_url
            else "**Not connected.** Enter the API URL, key and user in the Connection tab."
        )
        summary = gr.Markdown(initial, elem_id="esd_summary")
        with gr.Tabs(elem_id="esd_tabs"):
            with gr.Tab("Connection", id="esd_connection", elem_id="esd_tab_connection"):
                conn = _connection_tab(session, form, engine_url)
            with gr.Tab("Checkpoints", id="esd_checkpoints", elem_id="esd_tab_checkpoints") as ckpt_tab:
                ckpt = _checkpoints_tab(session, guards)
            with gr.Tab("Endpoints", id="esd_endpoints", elem_id="esd_tab_endpoints") as ep_tab:
                ep = _endpoints_tab(session, guards)
            with gr.Tab("Users and roles", id="esd_users", elem_id="esd_tab_users") as users_tab:
                users = _users_tab(session, guards)
            with gr.Tab("Datasets and training", id="esd_training", elem_id="esd_tab_training") as train_tab:
                train = _training_tab(session, guards)
            with gr.Tab("Inference history", id="esd_history", elem_id="esd_tab_history") as jobs_tab:
                jobs = _history_tab(session, guards)

        def after_sign_in() -> list[Any]:
            return [h.session_summary(session), *guards.updates(h.visibility(session))]

        def on_load() -> list[Any]:
            return [h.refresh_session(session), *guards.updates(h.visibility(session))]

        targets = [summary, *guards.components]
        blocks.load(on_load, inputs=None, outputs=targets)
        conn["save_event"].then(after_sign_in, inputs=None, outputs=targets)
        conn["forget_event"].then(after_sign_in, inputs=None, outputs=targets)
        conn["embedded_event"].then(after_sign_in, inputs=None, outputs=targets)
        conn["stop_event"].then(after_sign_in, inputs=None, outputs=targets)

        # a sub-tab loads its lists when it is opened
        ckpt_tab.select(ckpt["refresh_fn"], inputs=ckpt["refresh_inputs"], outputs=ckpt["refresh_outputs"])
        ep_tab.select(ep["refresh_fn"], inputs=None, outputs=ep["refresh_outputs"])
        users_tab.select(users["refresh_fn"], inputs=None, outputs=users["refresh_outputs"])
        train_tab.select(train["refresh_fn"], inputs=None, outputs=train["refresh_outputs"])
        jobs_tab.select(jobs["refresh_fn"], inputs=jobs["refresh_inputs"], outputs=jobs["refresh_outputs"])
    blocks.esd_guards = guards  # type: ignore[attr-defined]  # what the load event shows or hides (for tests)
    return blocks


# -- Connection --------------------------------------------------------------------------------


def _connection_tab(session: h.CloudSession, form: h.ConnectionForm, engine_url: str | None) -> dict[str, Any]:
    gr.Markdown(
        "The middleware's API URL (with its stage, e.g. `https://…/prod`), the deployment's API key, "
        "and the ESD user to act as. They are kept in a settings file only you can read; "
        "the key and password are never shown again."
    )
    with gr.Row():
        api_url = gr.Textbox(
            label="API URL", value=form.api_url, placeholder="http://127.0.0.1:8080/prod", elem_id="esd_api_url"
        )
        username = gr.Textbox(label="Username", value=form.username, elem_id="esd_username")
    with gr.Row():
        api_key = gr.Textbox(
            label="API key",
            type="password",
            placeholder="set — leave empty to keep it" if form.has_key else "the deployment's API key",
            elem_id="esd_api_key",
        )
        password = gr.Textbox(
            label="Password",
            type="password",
            placeholder="set — leave empty to keep it" if form.has_password else "to sign in and see your permissions",
            elem_id="esd_password",
        )
    with gr.Row():
        save = gr.Button("Save and sign in", variant="primary", elem_id="esd_save_connection")
        test = gr.Button("Test connection", elem_id="esd_test_connection")
        forget = gr.Button("Forget saved connection", elem_id="esd_forget_connection")
    result = gr.Markdown(form.note, elem_id="esd_connection_result")
    fields = [api_url, api_key, username, password]

    def clear_secrets() -> list[Any]:
        current = h.connection_form(session)
        return [
            gr.update(value="", placeholder="set — leave empty to keep it" if current.has_key else None),
            gr.update(value="", placeholder="set — leave empty to keep it" if current.has_password else None),
        ]

    save_event = save.click(functools.partial(h.save_and_sign_in, session), inputs=fields, outputs=[result]).then(
        clear_secrets, inputs=None, outputs=[api_key, password]
    )
    test.click(functools.partial(h.test_connection, session), inputs=fields, outputs=[result])
    forget_event = forget.click(lambda: h.forget_connection(session), inputs=None, outputs=[result])

    from aws_extension.embedded import DEFAULT_ENGINE_URL

    with gr.Accordion("Embedded middleware (no AWS account)", open=not form.api_url, elem_id="esd_embedded"):
        gr.Markdown(
            "Runs the middleware on this machine, in its own Python environment (made on first start, "
            "which takes a while; the WebUI's packages are not touched), and connects to it as its admin. "
            "Its local endpoints generate with the engine below: a WebUI started with `--api` (this one will do)."
        )
        engine = gr.Textbox(
            label="Engine URL (an A1111-compatible API)",
            value=engine_url or session.engine_url or DEFAULT_ENGINE_URL,
            elem_id="esd_engine_url",
        )
        with gr.Row():
            start = gr.Button("Start embedded middleware", elem_id="esd_start_embedded")
            stop = gr.Button("Stop it", elem_id="esd_stop_embedded")
        embedded_result = gr.Markdown("", elem_id="esd_embedded_status")

    def run_start(url: str) -> Iterator[str]:
        yield from h.start_embedded(session, url)

    embedded_event = start.click(run_start, inputs=[engine], outputs=[embedded_result])
    stop_event = stop.click(lambda: h.stop_embedded(session), inputs=None, outputs=[embedded_result])

    def refill() -> list[Any]:
        current = h.connection_form(session)
        return [gr.update(value=current.api_url), gr.update(value=current.username)]

    embedded_event.then(refill, inputs=None, outputs=[api_url, username])
    forget_event.then(refill, inputs=None, outputs=[api_url, username])
    return {
        "save_event": save_event,
        "forget_event": forget_event,
        "embedded_event": embedded_event,
        "stop_event": stop_event,
    }


# -- Checkpoints -------------------------------------------------------------------------------


def _checkpoints_tab(session: h.CloudSession, guards: _Guards) -> dict[str, Any]:
    guards.note("checkpoints.list", "You may not list checkpoints (checkpoint:list).")
    with guards.add("checkpoints.list", gr.Column()):
        with gr.Row():
            types = gr.CheckboxGroup(list(CHECKPOINT_TYPES), label="Types (none: all)", elem_id="esd_ckpt_types")
            statuses = gr.CheckboxGroup(
                list(h.CHECKPOINT_STATUSES), label="Statuses (none: all)", elem_id="esd_ckpt_statuses"
            )
        with gr.Row():
            page_size = gr.Dropdown(PAGE_SIZES, value="20", label="Per page", elem_id="esd_ckpt_page_size")
            refresh = gr.Button("↻ Refresh", elem_id="esd_ckpt_refresh")
            prev = gr.Button("◀ Previous", elem_id="esd_ckpt_prev")
            nxt = gr.Button("Next ▶", elem_id="esd_ckpt_next")
        info = gr.Markdown("Not loaded yet.", elem_id="esd_ckpt_info")
        table = _table(h.CHECKPOINT_HEADERS, "esd_ckpt_table")
        pager = gr.State(h.Pager())
    with guards.add("checkpoints.manage", gr.Column()):
        with gr.Row():
            selection = gr.Dropdown([], multiselect=True, label="Selected checkpoints", elem_id="esd_ckpt_selection")
            new_name = gr.Textbox(label="New file name (rename one)", elem_id="esd_ckpt_new_name")
        with gr.Row():
            rename = _small("Rename", "esd_ckpt_rename")
            delete = _small("Delete selected", "esd_ckpt_delete", "stop")
        manage_result = gr.Markdown("", elem_id="esd_ckpt_manage_result")
    with guards.add("checkpoints.upload", gr.Accordion("Upload from this WebUI's model folders", open=True)):
        with gr.Row():
            up_type = gr.Dropdown(
                list(CHECKPOINT_TYPES), value=CHECKPOINT_TYPES[0], label="Type", elem_id="esd_up_type"
            )
            up_file = gr.Dropdown([], label="File", elem_id="esd_up_file")
        files_note = gr.Markdown("", elem_id="esd_up_files_note")
        with gr.Row():
            files_refresh = _small("↻ List the folder's files", "esd_up_files_refresh")
            upload = _small("Upload", "esd_up_start", "primary")
            cancel = _small("Cancel upload", "esd_up_cancel")
        up_status = gr.Markdown("", elem_id="esd_up_status")
    with guards.add("checkpoints.url", gr.Accordion("Upload by URL (the middleware downloads it)", open=False)):
        with gr.Row():
            url_type = gr.Dropdown(
                list(CHECKPOINT_TYPES), value=CHECKPOINT_TYPES[0], label="Type", elem_id="esd_url_type"
            )
            url_message = gr.Textbox(label="Note (optional)", elem_id="esd_url_message")
        urls = gr.Textbox(label="URLs (one a line)", lines=3, elem_id="esd_url_list")
        url_go = _small("Create from URLs", "esd_url_start", "primary")
        url_result = gr.Markdown("", elem_id="esd_url_result")

    def show(types_: list[str], statuses_: list[str], size: str, state: h.Pager, move: str = "first") -> list[Any]:
        view = h.list_checkpoints(session, types_, statuses_, int(size or 20), state, move)
        table_update, selection_update, text = _list_updates(view)
        return [table_update, selection_update, text, view.pager]

    inputs = [types, statuses, page_size, pager]
    outputs = [table, selection, info, pager]

    first = functools.partial(show, move="first")

    refresh.click(first, inputs=inputs, outputs=outputs)
    types.change(first, inputs=inputs, outputs=outputs)
    statuses.change(first, inputs=inputs, outputs=outputs)
    page_size.change(first, inputs=inputs, outputs=outputs)
    prev.click(functools.partial(show, move="prev"), inputs=inputs, outputs=outputs)
    nxt.click(functools.partial(show, move="next"), inputs=inputs, outputs=outputs)

    same = functools.partial(show, move="same")

    rename.click(
        lambda chosen, name: h.rename_checkpoint(session, chosen, name), [selection, new_name], [manage_result]
    ).then(same, inputs=inputs, outputs=outputs)
    delete.click(lambda chosen: h.delete_checkpoints(session, chosen), [selection], [manage_result]).then(
        same, inputs=inputs, outputs=outputs
    )

    def list_files(kind: str) -> list[Any]:
        files, note = h.local_model_files(session, kind)
        return [gr.update(choices=files, value=files[0] if files else None), note]

    files_refresh.click(list_files, inputs=[up_type], outputs=[up_file, files_note])
    up_type.change(list_files, inputs=[up_type], outputs=[up_file, files_note])

    def run_upload(kind: str, name: str, progress: Any = gr.Progress()) -> Iterator[str]:  # noqa: B008
        for step in h.upload_local_checkpoint(session, kind, name):
            if step.fraction is not None and not step.done:
                _report(progress, step.fraction, step.text)
            yield step.text

    upload_event = upload.click(run_upload, inputs=[up_type, up_file], outputs=[up_status])
    upload_event.then(first, inputs=inputs, outputs=outputs)
    cancel.click(None, None, None, cancels=[upload_event])
    url_go.click(
        lambda kind, text, note: h.upload_checkpoint_urls(session, kind, text, note),
        [url_type, urls, url_message],
        [url_result],
    ).then(first, inputs=inputs, outputs=outputs)
    return {"refresh_fn": first, "refresh_inputs": inputs, "refresh_outputs": outputs}


def _report(progress: Any, fraction: float, text: str) -> None:
    """Move gradio's progress bar; a tracker that cannot report (no queue) is ignored."""
    try:
        progress(fraction, desc=text)
    except Exception:  # the status text still shows the progress
        log.debug("progress bar update failed", exc_info=True)


# -- Endpoints ---------------------------------------------------------------------------------


def _endpoints_tab(session: h.CloudSession, guards: _Guards) -> dict[str, Any]:
    guards.note("endpoints.list", "You may not list endpoints (sagemaker_endpoint:list).")
    with guards.add("endpoints.list", gr.Column()):
        with gr.Row():
            refresh = gr.Button("↻ Refresh", elem_id="esd_ep_refresh")
            watch = gr.Button("Watch until settled", elem_id="esd_ep_watch")
        info = gr.Markdown("Not loaded yet.", elem_id="esd_ep_info")
        table = _table(h.ENDPOINT_HEADERS, "esd_ep_table")
    with guards.add("endpoints.deploy", gr.Accordion("Deploy an endpoint", open=True)):
        with gr.Row():
            kind = gr.Radio(list(h.ENDPOINT_TYPES), value="Async", label="Type", elem_id="esd_ep_type")
            name = gr.Textbox(label="Name (optional: esd-{type}-{name})", elem_id="esd_ep_name")
            instance = gr.Dropdown(
                list(h.INSTANCE_TYPES),
                value=h.INSTANCE_TYPES[0],
                label="Instance type",
                allow_custom_value=True,
                elem_id="esd_ep_instance",
            )
        with gr.Row():
            initial = gr.Number(value=1, precision=0, label="Initial instances", elem_id="esd_ep_initial")
            autoscaling = gr.Checkbox(value=True, label="Autoscaling", elem_id="esd_ep_autoscaling")
            low = gr.Number(value=0, precision=0, label="Autoscaling min", elem_id="esd_ep_min")
            high = gr.Number(value=1, precision=0, label="Autoscaling max", elem_id="esd_ep_max")
        roles = gr.Dropdown([], multiselect=True, label="Roles that may use it", elem_id="esd_ep_roles")
        with gr.Row():
            roles_refresh = _small("↻ List roles", "esd_ep_roles_refresh")
            deploy = _small("Deploy", "esd_ep_deploy", "primary")
        deploy_result = gr.Markdown("", elem_id="esd_ep_deploy_result")
    with guards.add("endpoints.delete", gr.Column()):
        selection = gr.Dropdown([], multiselect=True, label="Selected endpoints", elem_id="esd_ep_selection")
        delete = _small("Delete selected endpoints", "esd_ep_delete", "stop")
        delete_result = gr.Markdown("", elem_id="esd_ep_delete_result")

    outputs = [table, selection, info]

    def show() -> list[Any]:
        return list(_list_updates(h.list_endpoints(session)))

    def follow() -> Iterator[list[Any]]:
        # gradio 4 sends a generator's later outputs as diffs patched into the value in place, which its
        # Dataframe never redraws (not even for the next whole value): there only the info line (with the
        # changing endpoints' states) is streamed, and `show` draws the table once the watch ends
        for view in h.watch_endpoints(session):
            table_update = gr.update(value=view.table.as_value()) if STREAM_TABLES else gr.update()
            yield [table_update, gr.update(choices=view.choices), view.info]

    def role_choices() -> Any:
        names, _ = h.role_names(session)
        return gr.update(choices=names)

    refresh.click(show, inputs=None, outputs=outputs)
    watch.click(follow, inputs=None, outputs=outputs).then(show, inputs=None, outputs=outputs)
    roles_refresh.click(role_choices, inputs=None, outputs=[roles])
    deploy.click(
        functools.partial(h.deploy_endpoint, session),
        inputs=[kind, name, instance, initial, autoscaling, low, high, roles],
        outputs=[deploy_result],
    ).then(follow, inputs=None, outputs=outputs).then(show, inputs=None, outputs=outputs)
    delete.click(lambda chosen: h.delete_endpoints(session, chosen), [selection], [delete_result]).then(
        follow, inputs=None, outputs=outputs
    ).then(show, inputs=None, outputs=outputs)

    def on_open() -> list[Any]:
        return [*show(), role_choices()]

    return {"refresh_fn": on_open, "refresh_outputs": [*outputs, roles]}


# -- Users and roles ---------------------------------------------------------------------------


def _users_tab(session: h.CloudSession, guards: _Guards) -> dict[str, Any]:
    gr.Markdown("### Roles")
    guards.note("roles.list", "You may not list roles (role:list).")
    with guards.add("roles.list", gr.Column()):
        roles_refresh = _small("↻ Refresh roles and users", "esd_roles_refresh")
        roles_info = gr.Markdown("Not loaded yet.", elem_id="esd_roles_info")
        roles_table = _table(h.ROLE_HEADERS, "esd_roles_table")
    with guards.add("roles.edit", gr.Accordion("Create a role, or set a role's permissions", open=True)):
        role_name = gr.Textbox(label="Role name", elem_id="esd_role_name")
        permissions = gr.CheckboxGroup(list(h.ALL_PERMISSIONS), label="Permissions", elem_id="esd_role_permissions")
        role_save = _small("Save role", "esd_role_save", "primary")
    with guards.add("roles.delete", gr.Column()):
        roles_selection = gr.Dropdown([], multiselect=True, label="Selected roles", elem_id="esd_roles_selection")
        roles_delete = _small("Delete selected roles", "esd_roles_delete", "stop")
    role_result = gr.Markdown("", elem_id="esd_role_result")

    gr.Markdown("### Users")
    guards.note("users.list", "You may not list users (user:list).")
    with guards.add("users.list", gr.Column()):
        users_info = gr.Markdown("Not loaded yet.", elem_id="esd_users_info")
        users_table = _table(h.USER_HEADERS, "esd_users_table")
    with guards.add("users.edit", gr.Accordion("Create a user, or set a user's roles and password", open=True)):
        with gr.Row():
            user_name = gr.Textbox(label="Username", elem_id="esd_user_name")
            user_password = gr.Textbox(
                label="Password (8+ characters; empty keeps an existing user's)",
                type="password",
                elem_id="esd_user_password",
            )
        user_roles = gr.Dropdown([], multiselect=True, label="Roles", elem_id="esd_user_roles")
        user_save = _small("Save user", "esd_user_save", "primary")
    with guards.add("users.delete", gr.Column()):
        users_selection = gr.Dropdown([], multiselect=True, label="Selected users", elem_id="esd_users_selection")
        users_delete = _small("Delete selected users", "esd_users_delete", "stop")
    user_result = gr.Markdown("", elem_id="esd_user_result")

    outputs = [roles_table, roles_selection, roles_info, user_roles, users_table, users_selection, users_info]

    def show() -> list[Any]:
        roles_view = h.list_roles(session)
        users_view = h.list_users(session)
        return [
            *_list_updates(roles_view),
            gr.update(choices=roles_view.choices),
            *_list_updates(users_view),
        ]

    roles_refresh.click(show, inputs=None, outputs=outputs)
    role_save.click(
        lambda name, perms: h.save_role(session, name, perms), [role_name, permissions], [role_result]
    ).then(show, inputs=None, outputs=outputs)
    roles_delete.click(lambda chosen: h.delete_roles(session, chosen), [roles_selection], [role_result]).then(
        show, inputs=None, outputs=outputs
    )
    user_save.click(
        lambda name, secret, roles: h.save_user(session, name, secret, roles),
        [user_name, user_password, user_roles],
        [user_result],
    ).then(show, inputs=None, outputs=outputs).then(lambda: gr.update(value=""), None, [user_password])
    users_delete.click(lambda chosen: h.delete_users(session, chosen), [users_selection], [user_result]).then(
        show, inputs=None, outputs=outputs
    )
    return {"refresh_fn": show, "refresh_outputs": outputs}


# -- Datasets and training ---------------------------------------------------------------------


def _training_tab(session: h.CloudSession, guards: _Guards) -> dict[str, Any]:
    guards.note("train.list", "You may not see datasets and trainings (train:list).")
    with guards.add("train.list", gr.Column()):
        gr.Markdown("### Datasets")
        refresh = _small("↻ Refresh datasets and trainings", "esd_ds_refresh")
        ds_info = gr.Markdown("Not loaded yet.", elem_id="esd_ds_info")
        ds_table = _table(h.DATASET_HEADERS, "esd_ds_table")
    with guards.add("train.datasets", gr.Accordion("New dataset: images with their captions", open=False)):
        gr.Markdown("Choose the images and their captions (`cat.png` with `cat.txt`), e.g. all files of a folder.")
        with gr.Row():
            ds_name = gr.Textbox(label="Dataset name", elem_id="esd_ds_name")
            ds_description = gr.Textbox(label="Description", elem_id="esd_ds_description")
            ds_prefix = gr.Textbox(
                label="Folder for kohya (repeats_concept, e.g. 10_lego; optional)", elem_id="esd_ds_prefix"
            )
        ds_files = gr.File(file_count="multiple", label="Images and captions", elem_id="esd_ds_files")
        ds_upload = _small("Upload dataset", "esd_ds_upload", "primary")
        ds_status = gr.Markdown("", elem_id="esd_ds_status")
    with guards.add("train.datasets", gr.Column()):
        ds_selection = gr.Dropdown([], multiselect=True, label="Selected datasets", elem_id="esd_ds_selection")
        ds_delete = _small("Delete selected datasets", "esd_ds_delete", "stop")
        ds_result = gr.Markdown("", elem_id="esd_ds_result")

    with guards.add("train.list", gr.Column()):
        gr.Markdown("### LoRA trainings")
        tr_info = gr.Markdown("Not loaded yet.", elem_id="esd_tr_info")
        tr_table = _table(h.TRAINING_HEADERS, "esd_tr_table")
    with guards.add("train.start", gr.Accordion("Start a LoRA training", open=False)):
        with gr.Row():
            tr_model = gr.Dropdown([], label="Base model (Stable-diffusion)", elem_id="esd_tr_model")
            tr_dataset = gr.Dropdown([], label="Dataset", elem_id="esd_tr_dataset")
        with gr.Row():
            fm_type = gr.Radio(list(h.FM_TYPES), value=h.FM_TYPES[0], label="Base model family", elem_id="esd_tr_fm")
            instance = gr.Dropdown(
                list(h.INSTANCE_TYPES),
                value=h.INSTANCE_TYPES[0],
                label="Instance type",
                allow_custom_value=True,
                elem_id="esd_tr_instance",
            )
        with gr.Row():
            output_name = gr.Textbox(label="LoRA name (optional)", elem_id="esd_tr_output")
            epochs = gr.Number(value=100, precision=0, label="Epochs", elem_id="esd_tr_epochs")
            save_every = gr.Number(value=50, precision=0, label="Save every N epochs", elem_id="esd_tr_save_every")
        with gr.Row():
            tr_choices = _small("↻ List models and datasets", "esd_tr_choices")
            tr_start = _small("Start training", "esd_tr_start", "primary")
        tr_note = gr.Markdown("", elem_id="esd_tr_note")
    with guards.add("train.list", gr.Column()):
        tr_selection = gr.Dropdown(
            [],
            label="Training to follow (pick one, or enter its id)",
            allow_custom_value=True,
            elem_id="esd_tr_selection",
        )
        tr_follow = _small("Follow its status", "esd_tr_follow")
        tr_status = gr.Markdown("", elem_id="esd_tr_status")

    outputs = [ds_table, ds_selection, ds_info, tr_table, tr_selection, tr_info]

    def show() -> list[Any]:
        datasets = h.list_datasets(session)
        trainings = h.list_trainings(session)
        tr_table_update, _, tr_text = _list_updates(trainings)
        first = trainings.choices[0] if trainings.choices else None
        return [
            *_list_updates(datasets),
            tr_table_update,
            gr.update(choices=trainings.choices, value=first),
            tr_text,
        ]

    def choices() -> list[Any]:
        models, datasets, note = h.training_choices(session)
        return [
            gr.update(choices=models, value=models[0] if models else None),
            gr.update(choices=datasets, value=datasets[0] if datasets else None),
            note,
        ]

    def run_dataset(
        name: str,
        description: str,
        files: Any,
        prefix: str,
        progress: Any = gr.Progress(),  # noqa: B008
    ) -> Iterator[str]:
        for step in h.upload_dataset(session, name, description, files or [], prefix):
            if step.fraction is not None and not step.done:
                _report(progress, step.fraction, step.text)
            yield step.text

    def run_follow(selected: str) -> Iterator[str]:
        yield from h.follow_training(session, selected)

    refresh.click(show, inputs=None, outputs=outputs)
    ds_upload.click(run_dataset, [ds_name, ds_description, ds_files, ds_prefix], [ds_status]).then(
        show, inputs=None, outputs=outputs
    )
    ds_delete.click(lambda chosen: h.delete_datasets(session, chosen), [ds_selection], [ds_result]).then(
        show, inputs=None, outputs=outputs
    )
    tr_choices.click(choices, inputs=None, outputs=[tr_model, tr_dataset, tr_note])
    start_event = tr_start.click(
        functools.partial(h.start_training, session),
        [tr_model, tr_dataset, fm_type, instance, output_name, epochs, save_every],
        [tr_note],
    ).then(show, inputs=None, outputs=outputs)
    start_event.then(run_follow, [tr_selection], [tr_status])
    tr_follow.click(run_follow, [tr_selection], [tr_status])

    def on_open() -> list[Any]:
        return [*show(), *choices()]

    return {"refresh_fn": on_open, "refresh_outputs": [*outputs, tr_model, tr_dataset, tr_note]}


# -- Inference history -------------------------------------------------------------------------


def _history_tab(session: h.CloudSession, guards: _Guards) -> dict[str, Any]:
    guards.note("jobs.list", "You may not list inference jobs (inference:list).")
    with guards.add("jobs.list", gr.Column()):
        with gr.Row():
            statuses = gr.CheckboxGroup(list(h.JOB_STATUSES), label="Statuses (none: all)", elem_id="esd_jobs_statuses")
            tasks = gr.CheckboxGroup(list(h.TASK_TYPES), label="Tasks (none: all)", elem_id="esd_jobs_tasks")
        with gr.Row():
            page_size = gr.Dropdown(PAGE_SIZES, value="20", label="Per page", elem_id="esd_jobs_page_size")
            refresh = gr.Button("↻ Refresh", elem_id="esd_jobs_refresh")
            prev = gr.Button("◀ Previous", elem_id="esd_jobs_prev")
            nxt = gr.Button("Next ▶", elem_id="esd_jobs_next")
        info = gr.Markdown("Not loaded yet.", elem_id="esd_jobs_info")
        table = _table(h.JOB_HEADERS, "esd_jobs_table")
        pager = gr.State(h.Pager())
        selection = gr.Dropdown(
            [], label="Job (click a row, or pick one)", allow_custom_value=True, elem_id="esd_jobs_selection"
        )
        open_job = _small("Open its images", "esd_jobs_open", "primary")
        gallery = gr.Gallery(label="Images", columns=4, height=420, elem_id="esd_jobs_gallery")
        job_info = gr.Markdown("", elem_id="esd_jobs_detail")
    with guards.add("jobs.delete", gr.Column()):
        delete = _small("Delete this job", "esd_jobs_delete", "stop")
        delete_result = gr.Markdown("", elem_id="esd_jobs_delete_result")

    def show(statuses_: list[str], tasks_: list[str], size: str, state: h.Pager, move: str = "first") -> list[Any]:
        view = h.list_jobs(session, statuses_, tasks_, int(size or 20), state, move)
        first = view.choices[0] if view.choices else None
        return [
            gr.update(value=view.table.as_value()),
            gr.update(choices=view.choices, value=first),
            view.info,
            view.pager,
        ]

    inputs = [statuses, tasks, page_size, pager]
    outputs = [table, selection, info, pager]

    first = functools.partial(show, move="first")

    refresh.click(first, inputs=inputs, outputs=outputs)
    statuses.change(first, inputs=inputs, outputs=outputs)
    tasks.change(first, inputs=inputs, outputs=outputs)
    page_size.change(first, inputs=inputs, outputs=outputs)
    prev.click(functools.partial(show, move="prev"), inputs=inputs, outputs=outputs)
    nxt.click(functools.partial(show, move="next"), inputs=inputs, outputs=outputs)

    def pick(rows: Any, event: gr.SelectData) -> Any:
        index = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        try:
            row = list(rows[index]) if not hasattr(rows, "iloc") else list(rows.iloc[index])
        except (IndexError, KeyError, TypeError):
            return gr.update()
        if not row or not row[-1]:
            return gr.update()
        return gr.update(value=h.SEPARATOR.join([str(row[0]), str(row[1]), str(row[3]), str(row[-1])]))

    table.select(pick, inputs=[table], outputs=[selection])

    def show_job(selected: str) -> list[Any]:
        view = h.open_job(session, selected)
        return [gr.update(value=view.images), view.info]

    open_job.click(show_job, inputs=[selection], outputs=[gallery, job_info])
    delete.click(lambda chosen: h.delete_jobs(session, chosen), [selection], [delete_result]).then(
        functools.partial(show, move="same"), inputs=inputs, outputs=outputs
    )
    return {"refresh_fn": first, "refresh_inputs": inputs, "refresh_outputs": outputs}
