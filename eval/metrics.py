"""Retrieval metrics, computed by ir-measures (MacAvaney, Macdonald and Ounis, ECIR 2022).

Measures are named as ir-measures names them (``nDCG@10``, ``R@100``, ``RR@10``, ``AP@100``,
``P@5``, ``Judged@10``, ...) and computed by its providers (pytrec_eval for most), so values match
``trec_eval`` and BEIR. The screening measures ``Recall@K%``, ``WSS@R`` and ``LastRel`` are computed
by :mod:`rankwise.eval.screening` on the same ranking.

Conventions, all explicit here rather than left to a provider:

* **Which queries count.** Every query of the ``qrels`` passed in is scored and averaged, the way
  BEIR does when the run covers all judged queries. A judged query missing from the run (or with
  no documents) scores 0 (ir-measures' own ``Evaluator.iter_calc`` does the same, filling in each
  measure's default, 0); a judged query with no relevant document also scores 0. Run queries that
  have no judgements are ignored. To evaluate on a subset, pass the qrels of that subset.
* **Ranking.** Documents are ranked by score, as ``trec_eval`` does (ties broken by document id,
  descending), not by their position in the run; that order is fixed here once and given to every
  provider, since ir-measures' providers do not all break ties alike (pytrec_eval and the one
  computing ``RR@k`` disagreed on tied scores).
* **Identical ids.** ``ignore_identical_ids=True`` (BEIR's default) drops a retrieved document whose
  id equals the query id before scoring: in some BEIR sets (ArguAna, Quora) queries are also
  documents and would trivially retrieve themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ir_measures

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "R@100", "RR@10", "AP@100")

RunLike = Run | Mapping[str, Mapping[str, float]] | Mapping[str, Iterable[tuple[str, float]]]
QrelsLike = Mapping[str, Mapping[str, int]]


def parse_measures(measures: str | Iterable[Any] = DEFAULT_MEASURES) -> list[ir_measures.Measure]:
    """ir-measures ``Measure`` objects from names (``"nDCG@10"``) or measures; a bad name is an InputError."""
    if isinstance(measures, str) or isinstance(measures, ir_measures.Measure):
        measures = [measures]
    parsed: list[ir_measures.Measure] = []
    for item in measures:
        from rankwise.eval.screening_measures import parse_screening  # Recall@10%, WSS@95, LastRel (eval/screening.py)

        if isinstance(item, ir_measures.Measure):
            measure = item
        elif (screening := parse_screening(item)) is not None:
            measure = screening
        else:
            try:
                measure = ir_measures.parse_measure(str(item).strip())
                measure.validate_params()
            except Exception as err:  # ir-measures raises ValueError, NameError, TypeError...
                raise InputError(
                    f"unknown or malformed measure {item!r} ({err}); use ir-measures names such as "
                    f"{', '.join(DEFAULT_MEASURES)}",
                    field="measure",
                ) from None
        if measure not in parsed:
            parsed.append(measure)
    if not parsed:
        raise InputError("no measures given", field="measure")
    return parsed


def evaluate(
    run: RunLike,
    qrels: QrelsLike,
    measures: str | Iterable[Any] = DEFAULT_MEASURES,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """Mean of each measure over the judged queries of ``qrels``: ``{"nDCG@10": 0.71, ...}``.

    Computed with ir-measures (MacAvaney et al., 2022); see the module docstring for which queries
    count (all of ``qrels``; missing ones score 0) and for ``ignore_identical_ids``.
    """
    parsed = parse_measures(measures)
    per_query = _per_query(run, qrels, parsed, ignore_identical_ids)
    results: dict[str, float] = {}
    for measure in parsed:
        aggregator = measure.aggregator()
        for value in per_query[measure].values():
            aggregator.add(value)
        results[str(measure)] = float(aggregator.result())
    return results


def evaluate_per_query(
    run: RunLike,
    qrels: QrelsLike,
    measures: str | Iterable[Any] = DEFAULT_MEASURES,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, float]]:
    """``{measure: {query_id: value}}`` for every judged query of ``qrels`` (missing ones are 0).

    Computed with ir-measures (MacAvaney et al., 2022); query ids come in sorted order.
    """
    parsed = parse_measures(measures)
    per_query = _per_query(run, qrels, parsed, ignore_identical_ids)
    return {str(m): dict(sorted(per_query[m].items())) for m in parsed}


def _per_query(
    run: RunLike, qrels: QrelsLike, measures: list[ir_measures.Measure], ignore_identical_ids: bool
) -> dict[ir_measures.Measure, dict[str, float]]:
    from rankwise.eval.screening_measures import ScreeningMeasure, screening_per_query

    qrels_dict = _qrels_dict(qrels)
    run_dict = _run_dict(run, ignore_identical_ids)
    screening = [m for m in measures if isinstance(m, ScreeningMeasure)]
    values: dict[Any, dict[str, float]] = dict(screening_per_query(run_dict, qrels_dict, screening))
    measures = [m for m in measures if not isinstance(m, ScreeningMeasure)]
    if not measures:
        return values
    try:
        evaluator = ir_measures.evaluator(measures, qrels_dict)
    except Exception as err:  # e.g. no installed provider supports a measure
        names = ", ".join(str(m) for m in measures)
        raise InputError(f"ir-measures cannot compute {names}: {err}", field="measure") from None
    values.update({m: {} for m in measures})
    for metric in evaluator.iter_calc(run_dict):
        if metric.query_id in qrels_dict:
            values[metric.measure][metric.query_id] = float(metric.value)
    # Explicit, whatever the provider does: a judged query the run lacks scores the default (0).
    for measure in measures:
        default = float(getattr(measure, "DEFAULT", 0.0))
        for qid in qrels_dict:
            values[measure].setdefault(qid, default)
    return values


def _qrels_dict(qrels: QrelsLike) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        judged = {str(did): int(grade) for did, grade in docs.items()}
        if judged:
            out[str(qid)] = judged
    if not out:
        raise InputError("the qrels hold no judgements: nothing to evaluate")
    return out


def _run_dict(run: RunLike, ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    source = run.as_dict() if isinstance(run, Run) else run
    out: dict[str, dict[str, float]] = {}
    for qid, docs in source.items():
        qid = str(qid)
        pairs = docs.items() if isinstance(docs, Mapping) else docs
        scores = {str(did): float(score) for did, score in pairs}
        if ignore_identical_ids:
            scores.pop(qid, None)
        if scores:
            # Rank once, the trec_eval way (score descending, ties by doc id descending), and hand
            # the providers strictly decreasing scores so that every measure sees the same order
            # (ir-measures' providers otherwise break ties differently from one another).
            order = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
            out[qid] = {did: float(len(order) - rank) for rank, (did, _) in enumerate(order)}
    return out
