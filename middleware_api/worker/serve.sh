#!/bin/sh
# Entrypoint of the SageMaker inference image: the WebUI's API on 7860 in the background, the worker on 8080.
# SageMaker starts the container as `<image> serve`; the argument is ignored.
# WEBUI_ARGS adds WebUI flags (e.g. "--xformers --skip-prepare-environment").
set -eu

WEBUI_DIR="${WEBUI_DIR:-/stable-diffusion-webui}"
if [ -z "${WEBUI_PYTHON:-}" ]; then
    if [ -x "$WEBUI_DIR/venv/bin/python" ]; then WEBUI_PYTHON="$WEBUI_DIR/venv/bin/python"; else WEBUI_PYTHON=python3; fi
fi

cd "$WEBUI_DIR"
# shellcheck disable=SC2086  # WEBUI_ARGS is a list of flags
"$WEBUI_PYTHON" launch.py --api --nowebui --port 7860 --listen ${WEBUI_ARGS:-} &

export ESD_ENGINE_URL=http://127.0.0.1:7860
export ESD_MODELS_DIR="$WEBUI_DIR/models"
export PYTHONPATH="/opt/esd${PYTHONPATH:+:$PYTHONPATH}"
# /ping stays Unhealthy until the WebUI answers, so SageMaker waits for it (container startup health check).
exec /opt/esd-worker/bin/python -m middleware_api.worker --host 0.0.0.0 --port 8080
