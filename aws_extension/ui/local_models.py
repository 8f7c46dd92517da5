"""The model files on this machine that the Checkpoints tab can upload: one folder per checkpoint type.

Inside the WebUI the folders come from `aws_extension.webui.model_folders()` (the WebUI's
`modules.paths` and `cmd_opts`); standalone, from `--models-dir`, a WebUI-style `models`
folder (`Stable-diffusion/`, `Lora/`, `VAE/`, `ControlNet/`, `hypernetworks/`, and
`embeddings/` there or beside it). Only files listed here can be uploaded: the UI never
reads a path a browser typed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("aws_extension.ui")

CHECKPOINT_TYPES = ("Stable-diffusion", "Lora", "VAE", "ControlNet", "embeddings", "hypernetworks")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".pkl", ".gguf")
MAX_FILES = 5000
MAX_DEPTH = 4

Folders = Mapping[str, "str | os.PathLike[str] | list[str | os.PathLike[str]]"]


def folders_under(models_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """The type folders of a WebUI-style `models` folder (those that exist), e.g. for `--models-dir`."""
    root = Path(models_dir).expanduser()
    names = {
        "Stable-diffusion": ["Stable-diffusion", "stable-diffusion", "checkpoints"],
        "Lora": ["Lora", "lora", "LyCORIS"],
        "VAE": ["VAE", "vae"],
        "ControlNet": ["ControlNet", "controlnet"],
        "embeddings": ["embeddings", "../embeddings"],
        "hypernetworks": ["hypernetworks"],
    }
    found: dict[str, list[Path]] = {}
    for kind, candidates in names.items():
        folders = [root / name for name in candidates if (root / name).is_dir()]
        unique: list[Path] = []
        for folder in folders:
            if all(not _same(folder, seen) for seen in unique):
                unique.append(folder)
        if unique:
            found[kind] = unique
    return found


def webui_folders() -> dict[str, list[Path]]:
    """The WebUI's model folders through `aws_extension.webui.model_folders()`; empty outside the WebUI."""
    try:
        from aws_extension import webui
    except Exception:  # not in the WebUI (modules.* missing), or the glue is not there
        return {}
    provider: Callable[[], Folders] | None = getattr(webui, "model_folders", None)
    if provider is None:
        return {}
    try:
        return normalize(provider())
    except Exception:
        log.exception("aws_extension.webui.model_folders() failed")
        return {}


def normalize(folders: Folders | None) -> dict[str, list[Path]]:
    """`{type: folder or [folders]}` as `{type: [Path, …]}`, unknown types dropped."""
    result: dict[str, list[Path]] = {}
    for kind, value in (folders or {}).items():
        if kind not in CHECKPOINT_TYPES or not value:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        result[kind] = [Path(item).expanduser() for item in values if item]
    return result


def list_files(folders: Mapping[str, list[Path]], kind: str) -> dict[str, Path]:
    """The model files of `kind`: `{shown name: path}`, the name relative to its folder, sorted."""
    found: dict[str, Path] = {}
    for folder in folders.get(kind, []):
        if not folder.is_dir():
            continue
        prefix = "" if len(folders[kind]) == 1 else f"{folder.name}/"
        for path in _walk(folder):
            shown = prefix + path.relative_to(folder).as_posix()
            found.setdefault(shown, path)
            if len(found) >= MAX_FILES:
                return dict(sorted(found.items()))
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _walk(folder: Path) -> list[Path]:
    files: list[Path] = []
    base_depth = len(folder.parts)
    for current, dirs, names in os.walk(folder, followlinks=True):
        depth = len(Path(current).parts) - base_depth
        dirs[:] = sorted(name for name in dirs if not name.startswith(".")) if depth < MAX_DEPTH else []
        for name in names:
            if name.lower().endswith(MODEL_SUFFIXES) and not name.startswith("."):
                files.append(Path(current) / name)
        if len(files) >= MAX_FILES:
            break
    return files


def _same(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False
