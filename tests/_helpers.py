"""Helpers the subprocess tests share: a corpus file, a free port, a run killed part-way (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(path: Path, texts: Sequence[str]) -> Path:
    """A JSONL corpus of ``texts`` with ids ``d0``, ``d1``, ..."""
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), read from ``/proc`` (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, env: dict[str, str], timeout: float = 120) -> int | None:
    """Start ``cmd`` in a process group of its own, wait until ``ready()`` (or it exits), then SIGKILL it all.

    Everything dies at once, as on a node failure: the group and the groups of all its descendants
    (torchrun starts each rank in a session of its own, so killing torchrun's group alone would leave
    the ranks running). Returns the command's exit status if it ended before it was killed, else None.
    """
    proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    status = proc.poll()
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return status
