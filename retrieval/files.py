"""Atomic file writes, atomic folder replacement and checksums: nothing half-written is ever left
under a final name, and what is written gets the permissions a plain ``open()`` would give it."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.locks import folder_lock

PARTIAL = ".partial"  # suffix of a folder being built beside its final name
_OLD = ".old"  # suffix of the folder a swap took out of the way, removed right after


def umask() -> int:
    """The process's umask (read from ``/proc`` where it is there, so no thread ever sees it changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, directory: bool = False) -> int:
    """The mode ``open(path, "w")`` (or ``mkdir``) would leave: an existing file's own, else 0o666 (0o777) less the umask."""
    if not directory and path.is_file():
        return path.stat().st_mode & 0o7777
    return (0o777 if directory else 0o666) & ~umask()


def plain_permissions(folder: str | Path) -> None:
    """Give ``folder`` and everything under it the permissions a plain ``open()`` / ``mkdir`` would
    (some writers, safetensors among them, create their files 0600)."""
    folder = Path(folder)
    mask = umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions a plain ``open()`` would give it (mkstemp's own are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _plain_mode(path))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_fingerprint(path: str | Path) -> str:
    """Hex SHA-256 of the file ``path``, or over the relative names and SHA-256 of every file under the
    folder ``path`` (files whose name starts with a dot left out): equal fingerprints, equal model files."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode())
    return h.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` for a manifest."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def remove_stale_partials(target: str | Path) -> None:
    """Remove what builds of ``target`` killed part-way left beside it (processes that no longer run).

    A ``.<name>.<pid>.*.partial`` folder is deleted; a ``.<name>.<pid>.*.old`` folder (the previous
    ``target``, taken out of the way by a swap that was killed between its two renames) is moved
    back when ``target`` is missing, else deleted.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    for entry in target.parent.glob(f".{glob.escape(target.name)}.*"):
        if not entry.name.endswith((PARTIAL, _OLD)):
            continue
        pid = entry.name[len(target.name) + 2:].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if entry.name.endswith(_OLD) and not target.exists():
            os.rename(entry, target)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where it is not offered."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, wait: bool = False, what: str = "build") -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; it replaces ``path`` whole only if the block succeeds.

    The folder is ``.<name>.<pid>.<random>.partial``; on failure (or Ctrl-C) it is removed and
    ``path`` is left as it was, and what a killed process left is removed by the next call for the
    same ``path`` (:func:`remove_stale_partials`). The folder lock of ``path`` is held throughout
    (:func:`rankwise.retrieval.locks.folder_lock`, ``wait`` and ``what`` as there). An existing
    ``path`` is swapped out in one step where the system offers it (Linux), else by two renames, and
    then deleted: nothing that was in it survives, so the new folder holds exactly what the block wrote. ``path`` naming a file is an
    :class:`InputError`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is a file, not a folder; name a folder (new, or one this command wrote)",
                         path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path, wait=wait, what=what):
        yield from _swap_in(path)


def _swap_in(path: Path) -> Iterator[Path]:
    """The body of :func:`atomic_dir`, run holding the folder's lock."""
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL, dir=path.parent))
    try:
        os.chmod(tmp, _plain_mode(tmp, directory=True))  # as a plain mkdir makes it (mkdtemp's is private)
        yield tmp
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):  # tmp now holds the old folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = Path(str(tmp)[: -len(PARTIAL)] + _OLD)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
