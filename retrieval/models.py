"""Where models come from: a hub name, a local path, or the offline mirror ``$RANKWISE_MODELS``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rankwise.retrieval.errors import InputError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name_or_path: str) -> str:
    """Return a local path for ``name_or_path`` when one exists, else the name for the hub.

    A path that exists is used as is. Otherwise, when ``$RANKWISE_MODELS/<last part of the name>``
    exists (the offline mirror, as ``$RANKWISE_DATA`` is for datasets) it is used instead of the hub.
    A local folder whose ``config.json`` cannot name the model's architecture is an :class:`InputError`.
    """
    if Path(name_or_path).expanduser().exists():
        return check_model_folder(Path(name_or_path).expanduser())
    mirror = os.environ.get("RANKWISE_MODELS")
    if mirror:
        candidate = Path(mirror).expanduser() / name_or_path.rstrip("/").split("/")[-1]
        if candidate.exists():
            return check_model_folder(candidate)
    return name_or_path


def check_model_folder(path: Path) -> str:
    """``path`` as a string, once its ``config.json`` (when it has one) is JSON naming a ``model_type``:
    without one, transformers cannot tell which architecture to build and fails deep inside loading."""
    config = path / "config.json"
    if not config.is_file():
        return str(path)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"not a readable JSON model configuration ({type(err).__name__}: {err})", path=config) \
            from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise InputError("missing: transformers needs it to know which model this is (e.g. \"bert\")", path=config,
                         field="model_type")
    return str(path)
