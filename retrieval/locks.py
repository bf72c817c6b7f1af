"""One writer per output folder: an advisory lock beside the folder (POSIX ``flock``).

A build takes the lock of its output folder for as long as it writes there. A second build of the
same folder is refused at once with one line (:class:`rankwise.retrieval.errors.InputError`, exit 2);
a shared cache waits for the build in progress instead (``wait=True``) and then reuses what it
finished. The lock file is ``.NAME.lock`` beside the folder ``NAME`` (the folder itself is
swapped whole when a build completes, see :func:`rankwise.retrieval.files.atomic_dir`); it is
removed when the lock is released. The lock belongs to the process: taking it again inside the
same process nests. Locks held by a process end with it, kill -9 included.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from rankwise.retrieval.errors import InputError

log = logging.getLogger(__name__)

_held: dict[str, tuple[int, int]] = {}  # lock file -> (fd, depth) for the locks this process holds
_guard = threading.Lock()


def lock_file(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.NAME.lock`` beside it."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except OSError:
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def _acquire(path: Path, wait: bool, folder: Path, what: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise InputError(f"another {what} holds this folder{_holder(path)}; wait for it to finish "
                                     f"or choose another --out (lock file {path})", path=folder) from None
                if not announced:
                    log.warning("%s: another %s holds this folder%s; waiting for it to finish",
                                folder, what, _holder(path))
                    announced = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us may have removed the file while we waited: lock the file that is there.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, wait: bool = False, what: str = "build") -> Iterator[None]:
    """Hold the lock of ``folder`` for the block.

    Without ``wait``, a folder locked by another process is refused with an :class:`InputError`
    naming it; with ``wait``, a line says whose build is waited for and the block starts when it ends.
    """
    folder = Path(folder).resolve()
    path = lock_file(folder)
    key = str(path)
    with _guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is None:
        fd = _acquire(path, wait, folder, what)
        with _guard:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
        if depth == 1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # before unlocking: a waiter that then locks the old file tries again
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
