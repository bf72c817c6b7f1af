"""Where models come from: a hub name, a local path, or the offline mirror ``$RANKWISE_MODELS``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name_or_path: str) -> str:
    """Return a local path for ``name_or_path`` when one exists, else the name for the hub.

    A path that exists is used as is. Otherwise, when ``$RANKWISE_MODELS/<last part of the name>``
    exists (the offline mirror, as ``$RANKWISE_DATA`` is for datasets) it is used instead of the hub.
    """
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    mirror = os.environ.get("RANKWISE_MODELS")
    if mirror:
        candidate = Path(mirror).expanduser() / name_or_path.rstrip("/").split("/")[-1]
        if candidate.exists():
            return str(candidate)
    return name_or_path
