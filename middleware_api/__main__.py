"""`python -m middleware_api serve`: the middleware on one machine (embedded backend by default)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from middleware_api.settings import BACKENDS, Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m middleware_api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API (secrets come from ESD_* variables, never flags)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--data-dir", type=Path, help="where the embedded backend keeps its data (ESD_DATA_DIR)")
    serve.add_argument("--backend", choices=BACKENDS, help="embedded (default) or aws (ESD_BACKEND)")
    serve.add_argument("--public-url", help="base URL clients reach this server on, for signed URLs (ESD_PUBLIC_URL)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(data_dir=args.data_dir, backend=args.backend, public_url=args.public_url)
    except SettingsError as error:
        parser.error(str(error))
    return _serve(settings, args.host, args.port)


def _serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from middleware_api.app import STAGE, create_app
    from middleware_api.container import build_services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = build_services(settings)
    try:
        made = services.first_start()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown_host}:{port}{STAGE}/"
    print(f"ESD middleware ({settings.backend} backend) on {url}", flush=True)
    if settings.backend == "embedded":
        print(f"  data folder: {settings.data_dir.resolve()}", flush=True)
    if "api_key" in made:
        print(f"  API key (shown once, only its hash is kept): {made['api_key']}", flush=True)
    if "admin_password" in made:
        print(f"  admin user: {settings.admin_username}  password (shown once): {made['admin_password']}", flush=True)
    logging.getLogger("uvicorn.access").addFilter(_hide_query_strings)
    try:
        uvicorn.run(create_app(services), host=host, port=port, log_level="info")
    finally:
        services.close()
    return 0


def _hide_query_strings(record: logging.LogRecord) -> bool:
    """Signed URLs carry their signature in the query string: keep it out of the access log."""
    if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
        path = record.args[2]
        if "?" in path:
            record.args = (*record.args[:2], path.split("?", 1)[0] + "?…", *record.args[3:])
    return True


if __name__ == "__main__":
    sys.exit(main())
