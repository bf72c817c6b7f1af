"""Responses of a served LLM kept on disk by request hash, so that a killed run re-sends only what it lacks.

One JSON file per request, ``<folder>/<hash[:2]>/<hash>.json``, written atomically
(:func:`rankwise.retrieval.files.write_json`: temporary file, fsync, rename), so a run killed at
any moment leaves whole entries only. The key is the SHA-256 of the request body (endpoint, model
name, prompt or messages, every sampling and log-probability parameter), not of the server's
address: the same request to the same model answers the same wherever it is served.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rankwise.retrieval.files import write_json

FORMAT = 1  # bump when the stored record changes shape: older entries are then ignored


def request_key(endpoint: str, body: dict[str, Any]) -> str:
    """The hex SHA-256 of one request (its endpoint and body, keys sorted)."""
    text = json.dumps({"format": FORMAT, "endpoint": endpoint, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """A folder of responses keyed by :func:`request_key`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None (absent or unreadable: it is then asked for again)."""
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        write_json(self._path(key), record)
