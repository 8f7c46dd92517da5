"""The Cloud tab: one tab with sub-tabs (Connection, Checkpoints, Endpoints, Users and roles, Datasets and
training, Inference history), in the WebUI (`on_ui_tabs`) and standalone (`python -m aws_extension`).

`handlers` holds what the buttons do as plain Python (testable without gradio); `layout` builds the
gradio Blocks on them, for gradio 3.41 and 4.40 alike. Importing this package imports neither gradio
nor the network: `build_cloud_tab` does the former, the page's events the latter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from aws_extension.config import Connection
    from aws_extension.ui.handlers import CloudSession


def build_cloud_tab(
    session: CloudSession | None = None,
    *,
    connection: Connection | None = None,
    model_folders: Mapping[str, Any] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    engine_url: str | None = None,
    embedded_dir: str | None = None,
    embedded_options: Mapping[str, Any] | None = None,
) -> gr.Blocks:
    """The Cloud tab's Blocks, built without any network call.

    With no arguments (the WebUI's `on_ui_tabs`) it uses the saved connection and the WebUI's
    model folders (`aws_extension.webui.model_folders()`). `connection` (standalone `--api-url`)
    replaces the saved one for this page; `models_dir` is a WebUI-style `models` folder and
    `model_folders` an explicit `{checkpoint type: folder}`; `engine_url` is what the embedded
    middleware's local endpoints call; `embedded_dir` and `embedded_options` go to
    `aws_extension.embedded.start_shared`. A given `session` is used as it is.
    """
    from aws_extension.ui import layout
    from aws_extension.ui.handlers import CloudSession
    from aws_extension.ui.local_models import folders_under

    if session is None:
        folders: Mapping[str, Any] | None = model_folders
        if folders is None and models_dir is not None:
            folders = folders_under(models_dir)
        session = CloudSession(
            connection,
            model_folders=folders,
            engine_url=engine_url,
            embedded_dir=embedded_dir,
            embedded_options=embedded_options,
        )
    return layout.build(session, engine_url=engine_url)


__all__ = ["build_cloud_tab"]
