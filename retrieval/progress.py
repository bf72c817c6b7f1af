"""Cost up front: a long job's projected time, from the throughput of its first batches.

:class:`CostEstimate` watches a job's first updates and, once ``warmup`` of them are done (the first
batch is left out of the rate: it pays for warm-up), makes one line: the items, the measured
throughput and the projected time of the whole job, e.g.

    cost: indexing scifact: 5,183 docs at 10.4 doc/s (measured over 3 batches): about 8 min 18 s

It is logged once (logger ``rankwise.cost``; the ``rankwise`` command prints it on stderr). Encoders
sort texts longest first, so their first batches are the slowest: the projection errs long.
:class:`CostBar` is a tqdm bar that does this and carries the projection in its postfix: indexing,
BM25, mining and reranking use it; training reports per step through a trainer callback
(:func:`rankwise.training.flow`) built on the same :class:`CostEstimate`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tqdm.auto import tqdm

__all__ = ["CostBar", "CostEstimate", "format_duration"]

logger = logging.getLogger("rankwise.cost")


def format_duration(seconds: float) -> str:
    """``"2 h 05 min"``, ``"8 min 18 s"``, ``"42 s"``."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


class CostEstimate:
    """Throughput over a job's first updates and the projected time of ``total`` items.

    ``update(n)`` after each batch (a resumed job's first update counts what was done before); once
    ``warmup`` updates after the first are done, :attr:`line` is set and logged (once). ``rate`` is
    items per second, ``projected`` the seconds for the items left after the first update.
    """

    def __init__(self, what: str, total: int | None, unit: str = "item", *, warmup: int = 3,
                 batch_word: str = "batch", log: bool = True) -> None:
        self.what, self.total, self.unit, self.warmup, self.batch_word = what, total, unit, max(1, warmup), batch_word
        self.log = log
        self.updates = 0
        self.done = 0
        self._start: float | None = None
        self._counted = 0
        self.rate: float | None = None
        self.projected: float | None = None
        self.line: str | None = None

    def update(self, n: int = 1) -> str | None:
        """Count ``n`` items; returns the cost line the one time it is made."""
        self.done += n
        self.updates += 1
        if self.updates == 1:  # the first batch pays for warm-up: the rate starts after it
            self._start, self._counted = time.perf_counter(), self.done
            return None
        if self.line is not None or self.updates < self.warmup + 1 or not self.total:
            return None
        elapsed = time.perf_counter() - (self._start or 0.0)
        items = self.done - self._counted
        if elapsed <= 0 or items <= 0:
            return None
        self.rate = items / elapsed
        self.projected = max(0, self.total - self._counted) / self.rate  # what is left after the first batch
        batches = self.updates - 1
        self.line = (f"cost: {self.what}: {self.total:,} {_plural(self.unit, self.total)} at "
                     f"{_rate(self.rate, self.unit)} (measured over {batches} {_plural(self.batch_word, batches)}): "
                     f"about {format_duration(self.projected)}")
        if self.log:
            logger.info(self.line)
        return self.line


def _plural(unit: str, n: int) -> str:
    if n == 1 or unit.endswith("s"):
        return unit
    if unit.endswith("y") and unit[-2:-1] not in "aeiou":
        return unit[:-1] + "ies"
    return unit + "es" if unit.endswith(("ch", "sh", "x")) else unit + "s"


def _rate(rate: float, unit: str) -> str:
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


class CostBar(tqdm):
    """A tqdm bar (``total=`` and ``update``) whose first batches give the cost line (:class:`CostEstimate`) and
    whose postfix carries the projected time. Takes tqdm's arguments; ``what`` names the job (default: ``desc``)."""

    def __init__(self, *args: Any, what: str | None = None, warmup: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cost = CostEstimate(what or kwargs.get("desc") or "job", self.total, kwargs.get("unit", "it"),
                                 warmup=warmup)

    def update(self, n: float = 1) -> bool | None:
        shown = super().update(n)
        if self.cost.update(int(n)) is not None and not self.disable:
            self.set_postfix_str(f"total ~{format_duration(self.cost.projected or 0)}", refresh=False)
        return shown
