"""Resumable work folders, one rule for all: index chunks, mining and reranking parts, training checkpoints.

A long job keeps its finished pieces in a work folder together with a record of the settings that
made them (their hash, and the settings themselves to say what differs). A rerun with the same
settings resumes; work made with other settings is discarded only with ``--force`` (``force=True``)
and refused otherwise, naming the settings that differ. A folder that holds nothing finished has
nothing to lose and is started over without asking.

A job cut into numbered units (chunks of documents, of queries) keeps unit ``n``'s output in
:func:`part_path` files, each written atomically, the one that marks the unit finished last;
:func:`concatenate` joins them in unit order. :mod:`rankwise.retrieval.distributed` shares the units
out across the processes of a ``torchrun`` job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open, write_json

log = logging.getLogger(__name__)
SETTINGS_FILE = "settings.json"


def settings_hash(settings: Any) -> str:
    """SHA-256 of ``settings`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _recorded(file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def claim_workdir(work: str | Path, settings: dict[str, Any], *, force: bool, what: str, key: str | None = None,
                  file: str = SETTINGS_FILE, has_work: Callable[[], bool] | None = None,
                  write: bool = True) -> bool:
    """Make ``work`` the folder of a job with ``settings``; True when it holds that job's work to resume.

    ``key`` (default: :func:`settings_hash` of ``settings``) is what must match; ``has_work`` says
    whether the folder holds finished pieces (default: anything besides the record); ``what`` names
    the job in the error (``"an unfinished mining run"``). ``write=False`` checks without writing
    (the non-main processes of a distributed run).
    """
    work = Path(work)
    key = key or settings_hash(settings)
    record_file = work / file
    anything = has_work or (lambda: any(p.name != file for p in work.iterdir()))
    if work.is_dir():
        recorded = _recorded(record_file) if record_file.is_file() else None
        if recorded is not None and recorded.get("hash") == key:
            return True
        if anything():
            if not force:
                if recorded is None:
                    raise InputError(f"holds {what} without a readable {file}; pass --force (force=True) to "
                                     "discard it, or choose another --out", path=work)
                old = recorded.get("settings", {})
                differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k)) or ["unknown"]
                raise InputError(f"holds {what} with other settings ({', '.join(differ)} differ); pass --force "
                                 "(force=True) to discard it, or choose another --out", path=work)
            log.warning("discarding %s in %s (other settings)", what, work)
        shutil.rmtree(work)
    if write:
        work.mkdir(parents=True, exist_ok=True)
        write_json(record_file, {"hash": key, "settings": settings})
    return False


def part_path(work: str | Path, number: int, kind: str = "tsv") -> Path:
    """The file of kind ``kind`` holding unit ``number``'s output in the work folder ``work``."""
    return Path(work) / f"part-{number:05d}.{kind}"


def concatenate(parts: Sequence[str | Path], target: str | Path) -> None:
    """Write the bytes of ``parts``, in order, to ``target`` (atomically)."""
    with atomic_open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out)
