"""Shared by the benchmark scripts: the command line, the machine line, medians and the JSON output.

Benchmarks print the exact command, the machine, and figures as ratios against a baseline measured
in the same run; progress goes to stderr, results to stdout (and to ``--json-out`` when given).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
ENV_KEYS = ("RANKWISE_MODELS", "HF_HUB_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def log(*parts: Any) -> None:
    """Progress and diagnostics: stderr, so stdout holds only the results."""
    print(*parts, file=sys.stderr, flush=True)


def command_line() -> str:
    """The command as it was run, with the environment variables that change the figures."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ENV_KEYS if k in os.environ]
    script = os.path.relpath(sys.argv[0], REPO) if Path(sys.argv[0]).is_absolute() else sys.argv[0]
    return " ".join(env + ["python", shlex.quote(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and library versions."""
    import faiss
    import numpy
    import sentence_transformers
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
    }


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB RAM; python {m['python']}, "
            f"torch {m['torch']} ({m['torch_threads']} threads), faiss {m['faiss']}, "
            f"sentence-transformers {m['sentence_transformers']}, transformers {m['transformers']}")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def alternate(variants: dict[str, Any], rounds: int, count: int, unit: str,
              sync: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Median rate (``count`` per second) of each variant over ``rounds`` rounds whose order rotates, after
    one warm-up call each, and each variant's last output; ``sync`` (e.g. ``torch.cuda.synchronize``)
    runs before and after each timed call."""
    import time

    sync = sync or (lambda: None)
    outputs = {name: fn() for name, fn in variants.items()}
    rates: dict[str, list[float]] = {n: [] for n in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync()
            t = time.perf_counter()
            outputs[name] = variants[name]()
            sync()
            dt = time.perf_counter() - t
            rates[name].append(count / dt)
            log(f"round {r + 1} {name:<10} {count / dt:10.2f} {unit}")
    return {n: median(v) for n, v in rates.items()}, outputs


def _cpu_ticks() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _own_cpu() -> float:
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _pid_cpu(pid: int, hz: int) -> float:
    """CPU seconds (user + system) a running process has used, from ``/proc/PID/stat``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / hz


class CpuShare:
    """How much of the machine's CPU *other* processes used while a measurement ran.

    ``others`` is their CPU time over (wall time x cores): 0.0 on a quiet machine. ``steal`` is the
    time the hypervisor gave the vCPUs to someone else. Both tell whether a figure is trustworthy.
    ``pids``: processes that are part of the measurement (a server the benchmark started), counted as its own.
    """

    def __init__(self, pids: tuple[int, ...] = ()) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.pids = pids
        self.others = self.steal = 0.0

    def _own(self) -> float:
        return _own_cpu() + sum(_pid_cpu(pid, self.hz) for pid in self.pids)

    def __enter__(self) -> CpuShare:
        import time

        self._t, self._own_start, (self._busy, self._steal) = time.perf_counter(), self._own(), _cpu_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        wall = time.perf_counter() - self._t
        busy, steal = _cpu_ticks()
        capacity = max(wall * self.cores, 1e-9)
        other_cpu = (busy - self._busy) / self.hz - (self._own() - self._own_start)
        self.others = max(0.0, other_cpu / capacity)
        self.steal = (steal - self._steal) / self.hz / capacity


class GpuBusy:
    """The share of time a CUDA device ran a kernel while a measurement ran (NVML's ``utilization.gpu``).

    Sampled every ``interval`` seconds in a thread through ``torch.cuda.utilization`` (pynvml) or,
    without pynvml, ``nvidia-smi``; ``share`` is the mean in [0, 1], or None where no GPU is used or
    neither source answers (printed "n/a").
    """

    def __init__(self, device: str, interval: float = 0.2) -> None:
        self.device, self.interval, self.share = device, interval, None
        self._samples: list[float] = []

    def _sample(self) -> float | None:
        import subprocess

        import torch

        index = torch.device(self.device).index or 0
        try:
            return float(torch.cuda.utilization(index))
        except Exception:  # no pynvml: ask nvidia-smi
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(index)], capture_output=True, text=True, timeout=5)
                return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return None

    def __enter__(self) -> GpuBusy:
        import threading

        self._stop = threading.Event()
        self._thread = None
        if self.device.startswith("cuda"):
            def run() -> None:
                while not self._stop.wait(self.interval):
                    value = self._sample()
                    if value is not None:
                        self._samples.append(value)

            self._thread = threading.Thread(target=run, name="gpu-busy", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.share = sum(self._samples) / len(self._samples) / 100 if self._samples else None

    def text(self) -> str:
        return "n/a" if self.share is None else f"{self.share:.0%}"


def wait_until_quiet(max_wait_s: float, threshold: float = 0.10, window_s: float = 10.0) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < ``threshold`` of the CPU over ``window_s``."""
    import time

    start = time.perf_counter()
    while True:
        with CpuShare() as share:
            time.sleep(window_s)
        if share.others < threshold or time.perf_counter() - start >= max_wait_s:
            log(f"other processes use {share.others:.0%} of the CPU; starting")
            return share.others
        log(f"other processes use {share.others:.0%} of the CPU; waiting for a quiet machine")


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        log(f"results written to {path}")
