"""Screening prioritisation measures: Recall@K%, WSS@R and LastRel (used by :mod:`rankwise.eval.metrics`).

Technology-assisted review (CLEF eHealth TAR, Kanoulas et al. 2017, 2018) ranks each review's
candidate studies so that reviewers meet every relevant one early. The measures:

* ``Recall@K%``: the share of a topic's relevant documents in the first ceil(K/100 x N) ranked
  documents (``Recall@10%``);
* ``WSS@R`` (work saved over sampling, Cohen et al., JAMIA 2006): at the first cut-off n where
  recall reaches R% (``WSS@95``), ``(TN + FN) / N - (1 - R/100)``, i.e. ``(N - n) / N - (1 - R/100)``;
* ``LastRel``: the 1-based position of the last relevant document (reviewers read that far to
  find them all).

N is the number of documents ranked for the topic: in a screening run every candidate, so the
collection; relevant documents the run lacks count as ranked after it (positions N+1...), which
makes N grow by their number. The order is the one :mod:`rankwise.eval.metrics` fixes (score descending,
ties by document id descending). ``WSS`` of a topic with no relevant document is undefined: an
:class:`InputError` naming the topic. These names are accepted wherever ``--measures`` is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rankwise.retrieval.errors import InputError

_NAME = re.compile(r"^(?:(recall|r)@(\d+(?:\.\d+)?)%|(wss)@(\d+(?:\.\d+)?)|(lastrel))$", re.IGNORECASE)
SCREENING_MEASURES = ("Recall@10%", "WSS@95", "LastRel")


class _Mean:
    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, value: float) -> None:
        self.values.append(value)

    def result(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0


@dataclass(frozen=True)
class ScreeningMeasure:
    """One screening measure; ``kind`` is ``recall``, ``wss`` or ``lastrel``, ``value`` its K or R."""

    kind: str
    value: float = 0.0
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    DEFAULT = 0.0

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return {"recall": f"Recall@{number}%", "wss": f"WSS@{number}", "lastrel": "LastRel"}[self.kind]

    def aggregator(self) -> _Mean:
        return _Mean()


def parse_screening(name: Any) -> ScreeningMeasure | None:
    """The screening measure ``name`` stands for (``Recall@10%``, ``WSS@95``, ``LastRel``), else None."""
    if isinstance(name, ScreeningMeasure):
        return name
    match = _NAME.match(str(name).strip())
    if not match:
        return None
    if match.group(5):
        return ScreeningMeasure("lastrel")
    kind, number = ("recall", match.group(2)) if match.group(1) else ("wss", match.group(4))
    value = float(number)
    if not 0.0 < value <= 100.0:
        raise InputError(f"measure {name!r}: the percentage must be in (0, 100]", field="measure")
    return ScreeningMeasure(kind, value)


def screening_value(measure: ScreeningMeasure, ranking: list[str], relevant: set[str], qid: str = "?") -> float:
    """``measure`` of one topic: ``ranking`` is the ranked document ids, ``relevant`` the relevant ones."""
    missing = sorted(relevant.difference(ranking))
    ranked = list(ranking) + missing  # relevant documents the run lacks come last
    n = len(ranked)
    positions = [i + 1 for i, did in enumerate(ranked) if did in relevant]
    if not positions:
        if measure.kind == "wss":
            raise InputError(f"topic {qid!r} has no relevant document: {measure} is undefined", field="qrels")
        return 0.0
    if measure.kind == "lastrel":
        return float(positions[-1])
    if measure.kind == "recall":
        cutoff = math.ceil(measure.value / 100.0 * n - 1e-9)
        return sum(1 for p in positions if p <= cutoff) / len(positions)
    needed = math.ceil(measure.value / 100.0 * len(positions) - 1e-9)  # first cut-off reaching R% recall
    reviewed = positions[max(needed, 1) - 1]
    return (n - reviewed) / n - (1.0 - measure.value / 100.0)


def screening_per_query(run_dict: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                        measures: Iterable[ScreeningMeasure]) -> dict[ScreeningMeasure, dict[str, float]]:
    """``{measure: {qid: value}}`` over the judged topics of ``qrels``; ``run_dict`` holds strictly
    ranked scores (as :func:`rankwise.eval.metrics._run_dict` makes them)."""
    out: dict[ScreeningMeasure, dict[str, float]] = {m: {} for m in measures}
    for qid, judged in qrels.items():
        docs = run_dict.get(qid, {})
        ranking = [did for did, _ in sorted(docs.items(), key=lambda item: item[1], reverse=True)]
        relevant = {did for did, grade in judged.items() if grade > 0}
        for measure in out:
            out[measure][qid] = screening_value(measure, ranking, relevant, qid)
    return out
