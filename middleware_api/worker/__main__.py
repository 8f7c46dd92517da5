"""`python -m middleware_api.worker --port 8080`: serve the endpoint worker (settings from `ESD_*` variables)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_worker_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the worker with uvicorn."""
    parser = argparse.ArgumentParser(prog="python -m middleware_api.worker", description="ESD endpoint worker")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    # SageMaker starts the container as `<image> serve`; accept and ignore it.
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_worker_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
