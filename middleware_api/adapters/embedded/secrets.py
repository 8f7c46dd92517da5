"""The embedded deployment's own secrets, in `secrets.json` of the data folder, readable by its owner only.

It holds the URL-signing key and the SHA-256 digest of the API key (the key
itself is printed once when made and never stored).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


class LocalSecrets:
    """Read and update `secrets.json` (mode 0600)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "secrets.json"
        self._values: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        if "signing_key" not in self._values:
            self._values["signing_key"] = secrets.token_hex(32)
            self._save()

    @property
    def signing_key(self) -> bytes:
        return bytes.fromhex(self._values["signing_key"])

    @property
    def api_key_sha256(self) -> str | None:
        return self._values.get("api_key_sha256")

    def store_api_key_sha256(self, digest: str) -> None:
        self._values["api_key_sha256"] = digest
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(self._values, file)
        os.replace(temporary, self.path)
