"""Where rankwise keeps what it can rebuild: ``$RANKWISE_CACHE``, else ``~/.cache/rankwise``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root of rankwise's cache (datasets, indexes, exported models)."""
    base = os.environ.get("RANKWISE_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "rankwise"
