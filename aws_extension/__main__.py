"""`python -m aws_extension`: the Cloud tab's sub-tabs in a plain Gradio page, against any ESD middleware.

The API key never comes from a flag: it is `$ESD_API_KEY`, else the saved connection's (the
settings file the WebUI's Cloud tab writes). A password to sign in with may come from
`$ESD_PASSWORD` or the saved connection; the page's Connection tab can also sign in.
`--embedded` starts the embedded middleware on this machine and connects to it.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aws_extension import config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (secrets come from the environment, never from flags)."""
    parser = argparse.ArgumentParser(prog="python -m aws_extension", description=__doc__)
    parser.add_argument("--api-url", help="the middleware's API URL with its stage, e.g. http://127.0.0.1:8080/prod")
    parser.add_argument("--username", help="the ESD user to act as (default: the saved connection's)")
    parser.add_argument("--host", default="127.0.0.1", help="address the page listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7861, help="port of the page (default 7861)")
    parser.add_argument("--models-dir", help="a WebUI-style models folder (Stable-diffusion/, Lora/, VAE/, …)")
    parser.add_argument("--embedded", action="store_true", help="start the embedded middleware and connect to it")
    parser.add_argument("--engine-url", help="the engine the embedded middleware's endpoints call (default :7860)")
    parser.add_argument("--embedded-dir", help="the embedded middleware's data folder")
    parser.add_argument(
        "--embedded-python", help="a Python that already runs the middleware (skips making its environment)"
    )
    return parser.parse_args(argv)


def resolve_connection(args: argparse.Namespace, environ: dict[str, str] | None = None) -> config.Connection | None:
    """The page's connection: `--api-url` with the key from `$ESD_API_KEY` or the saved one, else the saved one."""
    env = os.environ if environ is None else environ
    try:
        saved = config.load_connection()
    except config.ConfigError as exc:
        logging.getLogger("aws_extension").warning("ignoring the saved connection: %s", exc)
        saved = None
    if not args.api_url:
        if saved is None:
            return None
        username = args.username or saved.username
        password = env.get("ESD_PASSWORD") or (saved.password if username == saved.username else None)
        return config.Connection(saved.api_url, env.get("ESD_API_KEY") or saved.api_key, username, password)
    url = config.normalize_api_url(args.api_url)
    same = saved is not None and saved.api_url == url
    key = env.get("ESD_API_KEY") or (saved.api_key if same and saved else "")
    if not key:
        raise config.ConfigError(f"no API key for {url}: set ESD_API_KEY (never a flag) or save the connection first")
    username = args.username or (saved.username if same and saved else None)
    password = env.get("ESD_PASSWORD") or (saved.password if same and saved and saved.username == username else None)
    return config.Connection(url, key, username, password)


def queue_options(blocks: Any) -> dict[str, Any]:
    """Queue settings that let long actions (uploads, watching) run beside others, in gradio 3 and 4."""
    parameters = inspect.signature(blocks.queue).parameters
    if "default_concurrency_limit" in parameters:  # gradio 4
        return {"default_concurrency_limit": 8}
    if "concurrency_count" in parameters:  # gradio 3
        return {"concurrency_count": 8}
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the page until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # SIGTERM ends the page like Ctrl-C does, so `atexit` stops an embedded middleware it started
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    connection: config.Connection | None
    embedded_options: dict[str, Any] = {"python": args.embedded_python} if args.embedded_python else {}
    if args.embedded:
        from aws_extension import embedded

        engine_url = args.engine_url or embedded.DEFAULT_ENGINE_URL
        try:
            middleware = embedded.start_shared(
                args.embedded_dir, engine_url=engine_url, report=print, **embedded_options
            )
        except embedded.EmbeddedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        connection = middleware.connection()
    else:
        try:
            connection = resolve_connection(args)
        except config.ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    from aws_extension.ui import build_cloud_tab

    blocks = build_cloud_tab(
        connection=connection,
        models_dir=args.models_dir,
        engine_url=args.engine_url,
        embedded_dir=args.embedded_dir,
        embedded_options=embedded_options,
    )
    blocks.queue(**queue_options(blocks))
    where = connection.api_url if connection else "no connection yet"
    print(f"ESD Cloud page on http://{args.host}:{args.port}/ ({where})", flush=True)
    blocks.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
