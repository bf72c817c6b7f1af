"""Where rankwise keeps what it can rebuild (``$RANKWISE_CACHE``, else ``~/.cache/rankwise``), and
whether it may download (:func:`offline`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root of rankwise's cache (datasets, indexes, exported models)."""
    base = os.environ.get("RANKWISE_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "rankwise"


def offline() -> bool:
    """Downloads are off: ``RANKWISE_OFFLINE=1``, or Hugging Face's ``HF_HUB_OFFLINE=1`` (models stay local too)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("RANKWISE_OFFLINE", "HF_HUB_OFFLINE"))
