"""``manifest.json``: what makes a folder a complete rankwise index, written last and checked on load.

A manifest records the format version, what kind of index the folder holds, how it was built
(encoder name and fingerprint, index config, source corpus checksum, count) and the SHA-256 and
size of every file in it. A folder without a manifest, or whose files do not match it, is never
loaded as an index: an interrupted build cannot be mistaken for a complete one.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import file_record, sha256_file, write_json

FORMAT = "rankwise-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_manifest(directory: str | Path, kind: str, files: list[str], **fields: Any) -> dict[str, Any]:
    """Checksum ``files`` (paths relative to ``directory``) and write the manifest atomically, last."""
    directory = Path(directory)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "files": {name: file_record(directory / name) for name in sorted(files)},
    }
    write_json(directory / MANIFEST, manifest)
    return manifest


# What a folder rankwise builds an index in may hold; anything else is not its to replace.
INDEX_FOLDER_ENTRIES = frozenset({MANIFEST, "index.faiss", "docids.txt", "chunks", "lucene", ".work", ".ranks"})


def check_output_folder(out: str | Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding files no index build wrote (a completed
    build replaces the whole folder; left-over temporary files ``.*.tmp`` are ignored)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", path=out)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in INDEX_FOLDER_ENTRIES
                         and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise InputError(f"holds files that are not part of a rankwise index ({shown}); choose an empty or new "
                             "--out", path=out)


def remove_manifest(directory: str | Path) -> None:
    """Mark a folder incomplete before rewriting any of its files."""
    (Path(directory) / MANIFEST).unlink(missing_ok=True)


def read_manifest(directory: str | Path, kinds: tuple[str, ...] | None = None, *, verify: bool = True) -> dict[str, Any]:
    """Read and check a manifest: format, version, kind, and (``verify``) every file's size and SHA-256."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise InputError("index folder not found", path=directory)
    if not path.is_file():
        raise InputError("no manifest.json: not a rankwise index, or an unfinished build (re-run `rankwise index`)",
                         path=directory)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"unreadable manifest: {err}", path=path) from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"not a rankwise manifest (format={manifest.get('format')!r})", path=path, field="format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"format version {manifest.get('format_version')} is not supported (this rankwise reads "
                         f"{FORMAT_VERSION}); rebuild the index", path=path, field="format_version")
    if kinds is not None and manifest.get("kind") not in kinds:
        raise InputError(f"index kind {manifest.get('kind')!r} where {' or '.join(kinds)} is needed", path=path, field="kind")
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Refuse a folder whose files are missing or differ from the manifest's checksums."""
    for name, record in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise InputError("missing file listed in manifest.json", path=file)
        if file.stat().st_size != record["bytes"] or sha256_file(file) != record["sha256"]:
            raise InputError("checksum does not match manifest.json (file changed or corrupt)", path=file)
