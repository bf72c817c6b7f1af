"""Running means of a loss's own statistics between two entries of the training log.

A loss that records values here (e.g. PG-Rank's reward and estimator variance, FIRST's two terms)
exposes ``pop_logs()``, which :func:`rankwise.training.runner.with_loss_logs` merges into each log entry.
"""

from __future__ import annotations

from typing import Any


class LoggedStats:
    """Sums of recorded values and the number of records since the last :meth:`pop`."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def record(self, **values: Any) -> None:
        """Add one value per name (tensors are read with ``float``)."""
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
            self._counts[name] = self._counts.get(name, 0) + 1

    def pop(self) -> dict[str, float]:
        """The mean of each name since the previous call, then start over."""
        out = {name: round(total / self._counts[name], 6) for name, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return out


class WithLoggedStats:
    """A loss that records into ``self.logged``; ``pop_logs`` is what the trainer's ``log`` reads."""

    logged: LoggedStats

    def pop_logs(self) -> dict[str, float]:
        """The means recorded since the previous log entry."""
        return self.logged.pop()
