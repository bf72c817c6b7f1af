"""Atomic file writes, atomic folder replacement and checksums: nothing half-written is ever left
under a final name, and what is written gets the permissions a plain ``open()`` would give it."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rankwise.retrieval.errors import InputError



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


def temporary_folder(path: str | Path, label: str = "new") -> Path:
    """A new empty folder beside ``path`` (hidden, named after it) with the permissions ``mkdir`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.{label}-", dir=path.parent))
    folder.chmod(_plain_mode(folder, directory=True))
    return folder


def remove_temporaries(path: str | Path) -> None:
    """Delete the temporary folders beside ``path`` a killed build left (call it holding ``path``'s lock).

    A swap killed between its two renames (:func:`replace_folder` where the system cannot exchange
    two paths) leaves ``path`` missing and its old folder aside: that folder is moved back first.
    """
    path = Path(path)
    if path.parent.is_dir():
        if not path.exists():
            for old in path.parent.glob(f".{glob.escape(path.name)}.old-*/folder"):
                os.replace(old, path)
                break
        for label in ("new", "old"):
            for folder in path.parent.glob(f".{glob.escape(path.name)}.{label}-*"):
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(new: str | Path, path: str | Path) -> None:
    """Put the complete folder ``new`` (from :func:`temporary_folder`) in the place of ``path``, then
    delete what ``path`` held. Readers see the old folder or the new one, never a mix: the two are
    exchanged in one step where the system allows it, else by two renames."""
    new, path = Path(new), Path(path)
    if not path.exists():
        os.replace(new, path)
        return
    if _exchange(new, path):
        shutil.rmtree(new)  # now the old folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / "folder")
    os.replace(new, path)
    shutil.rmtree(old)


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


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` for a manifest."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, wait: bool = False, what: str = "build") -> Iterator[Path]:
    """Yield a new empty folder beside ``path`` that replaces ``path`` whole only if the block succeeds.

    The folder lock of ``path`` (:func:`rankwise.retrieval.locks.folder_lock`; ``wait`` and ``what`` as
    there) is held throughout; what a killed build left beside ``path`` is removed first
    (:func:`remove_temporaries`), the new folder comes from :func:`temporary_folder` and is put in
    place by :func:`replace_folder`. On failure (Ctrl-C included) it is removed and ``path`` is left
    as it was. Nothing of the old ``path`` survives the swap, so the folder holds exactly what the
    block wrote. ``path`` naming a file is an :class:`InputError`.
    """
    from rankwise.retrieval.locks import folder_lock

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is a file, not a folder; name a folder (new, or one this command wrote)",
                         path=path)
    with folder_lock(path, wait=wait, what=what):
        remove_temporaries(path)
        new = temporary_folder(path)
        try:
            yield new
            replace_folder(new, path)
        finally:
            if new.exists():
                shutil.rmtree(new, ignore_errors=True)
