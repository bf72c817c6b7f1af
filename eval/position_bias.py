"""Position-bias probe: quality bucketed by where the relevant text sits in a long document.

On SciFact-long (``bench/make_scifact_long.py``) every relevant document holds its original
abstract at a known position among 8; dense retrievers and truncating rerankers favour text that
comes first (Coelho et al., 2024, "Dwell in the Beginning: How Language Models Embed Long
Documents for Dense Retrieval"; Hofstätter et al., 2021, IDCM, for FirstP / MaxP). For every
(query, relevant document) pair this probe takes the document's rank in each system's run and the
pair's own nDCG@10 (the query judged by that one document, with ir-measures through
:mod:`rankwise.eval.metrics`), and averages them per position bucket (``buckets`` equal parts of the
document; 8 buckets of 8 abstracts: one per abstract).

``rankwise position-bias DATASET --systems ...`` runs the systems of :mod:`rankwise.eval.systems` (plus
``dense-passages[:MODEL]``, a dense index of passages returning documents; see
:mod:`rankwise.retrieval.passage_index`) and prints the table; ``--plot`` writes one line per system.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankwise.eval.metrics import evaluate_per_query
from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.formats import iter_lines
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.pipeline import Context, Dense, Pipeline, Stage, Step
from rankwise.retrieval.run import Run

if TYPE_CHECKING:
    import pandas as pd

MEASURE = "nDCG@10"
POSITIONS_FILE = "positions.tsv"
DENSE_PASSAGES = "dense-passages"


@dataclass(frozen=True)
class DensePassages(Stage):
    """A dense index of ``passages``-word passages (every ``stride`` words) returning documents by their
    best passage (:class:`rankwise.retrieval.passage_index.PassageDenseRetriever`)."""

    model: str = DEFAULT_ENCODER
    passages: int = 128
    stride: int | None = None
    backend: Backend | str = "torch"
    batch_size: int = 64
    first = True
    kind = DENSE_PASSAGES

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        from rankwise.retrieval.passage_index import PassageDenseRetriever
        from rankwise.retrieval.passages import Splitter

        encoder = Dense(self.model, backend=self.backend, batch_size=self.batch_size).encoder(ctx)
        retriever, index_s = ctx.resource(
            (self, id(ctx.corpus)), lambda: PassageDenseRetriever(ctx.need_corpus(self), encoder,
                                                                  Splitter(self.passages, self.stride),
                                                                  name=ctx.name, progress=ctx.progress))
        t = time.perf_counter()
        run = retriever.search(ctx.queries, k=k, progress=ctx.progress)
        record.timings.update({f"{self.kind}_index_s": index_s, f"{self.kind}_search_s": time.perf_counter() - t})
        record.stats[self.kind] = {"passages_per_doc": retriever.counts["passages"] /
                                   max(1, retriever.counts["documents"])}
        record.models["encoder"] = encoder
        return run


def probe_pipelines(specs: Sequence[str], *, model: str = DEFAULT_ENCODER, depth: int = 10, passages: int = 128,
                    stride: int | None = None, batch_size: int = 64) -> list[Pipeline]:
    """The systems of ``--systems``: those of :func:`rankwise.eval.systems.parse_system`, plus
    ``dense-passages[:MODEL]``."""
    from rankwise.eval.systems import parse_system

    out = []
    for spec in specs:
        if spec.startswith(DENSE_PASSAGES):
            if spec != DENSE_PASSAGES and not spec.startswith(DENSE_PASSAGES + ":"):
                raise InputError(f"system {spec!r}: write dense-passages or dense-passages:MODEL", field="systems")
            stage = DensePassages(spec.partition(":")[2] or model, passages, stride, batch_size=batch_size)
            out.append(Pipeline([stage], name=spec))
        else:
            out.append(parse_system(spec, model=model, depth=depth, batch_size=batch_size))
    return out


def summaries(result: Any) -> dict[str, dict[str, Any]]:
    """Per system of an experiment: metrics, query seconds, timings, passages scored per document, truncations."""
    out = {}
    for name, system in result.systems.items():
        rerank = system.stats.get("rerank") or {}
        extra = rerank.get("extra", {})
        docs = extra.get("documents") or rerank.get("passages")
        scored = extra.get("passages_scored", rerank.get("passages"))
        per_doc = (system.stats.get(DENSE_PASSAGES) or {}).get("passages_per_doc")
        if per_doc is None and rerank:
            per_doc = (scored / docs) if docs and scored is not None else None
        out[name] = {"metrics": system.metrics, "query_s": system.query_seconds, "timings": system.timings,
                     "passages_per_doc": per_doc, "truncated": rerank.get("truncated")}
    return out


def run_position_bias(dataset: Any, pipelines: Sequence[Pipeline], positions: Mapping[str, tuple[int, int]], *,
                      k: int = 100, buckets: int = 8, split: str = "test",
                      progress: bool = True) -> tuple[Any, pd.DataFrame, dict[str, dict[str, Any]]]:
    """Run the pipelines (an :class:`~rankwise.eval.experiment.Experiment` measuring nDCG@10), then
    bucket each relevant document's rank by its position: the result, :func:`position_table` and
    :func:`summaries`."""
    from rankwise.eval.experiment import Experiment

    if buckets < 1:
        raise InputError(f"--buckets must be at least 1, got {buckets}", field="buckets")
    result = Experiment(pipelines, dataset, [MEASURE], split=split, k=k, progress=progress).run()
    table = position_table(result.runs, dataset.qrels(split), positions, buckets=buckets)
    return result, table, summaries(result)


def read_positions(path: str | Path) -> dict[str, tuple[int, int]]:
    """``{doc id: (position, abstracts)}`` from a ``positions.tsv`` (doc-id, position, abstracts, ...)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no positions file (make one with bench/make_scifact_long.py)", path=path)
    out: dict[str, tuple[int, int]] = {}
    for number, line in iter_lines(path):
        fields = line.rstrip("\n").split("\t")
        if number == 1 and fields[0] == "doc-id":
            continue
        try:
            doc, position, count = fields[0], int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            raise InputError(f"line {number}: expected doc-id, position and abstracts (integers)",
                             path=path, field="position") from None
        if not 0 <= position < count:
            raise InputError(f"line {number}: position {position} is not within 0..{count - 1}", path=path,
                             field="position")
        out[doc] = (position, count)
    return out


def bucket_of(position: int, count: int, buckets: int) -> int:
    """The 0-based bucket (of ``buckets`` equal parts) of abstract ``position`` among ``count``."""
    return position * buckets // count


def position_table(runs: Mapping[str, Run], qrels: Mapping[str, Mapping[str, int]],
                   positions: Mapping[str, tuple[int, int]], *, buckets: int = 8) -> pd.DataFrame:
    """Rows ``system, bucket (1-based), pairs, nDCG@10, MRR, median_rank, found``; bucket 0 is all pairs.

    A pair whose document is not in the run has reciprocal rank 0 and is left out of the median
    rank (``found`` is the share of pairs retrieved at all).
    """
    pd = requires("pandas", "experiments", "The position-bias table")
    pairs = [(q, d, rel) for q, docs in qrels.items() for d, rel in docs.items() if rel > 0 and d in positions]
    if not pairs:
        raise InputError("no relevant document of the qrels has a position", field="positions")
    keys = [f"{q}\t{d}" for q, d, _ in pairs]
    pair_qrels = {key: {d: rel} for key, (_, d, rel) in zip(keys, pairs)}
    rows = []
    for system, run in runs.items():
        pair_run = {key: dict(run[q]) if q in run else {} for key, (q, _, _) in zip(keys, pairs)}
        ndcg = evaluate_per_query(pair_run, pair_qrels, [MEASURE], ignore_identical_ids=False)[MEASURE]
        ranks: dict[str, int | None] = {}
        for key, (q, d, _) in zip(keys, pairs):
            order = [doc for doc, _ in run[q]] if q in run else []
            ranks[key] = order.index(d) + 1 if d in order else None
        groups: dict[int, list[str]] = {0: keys}
        for key, (_, d, _) in zip(keys, pairs):
            groups.setdefault(bucket_of(*positions[d], buckets) + 1, []).append(key)
        for bucket in [0] + list(range(1, buckets + 1)):
            members = groups.get(bucket, [])
            found = [ranks[k] for k in members if ranks[k] is not None]
            rows.append({"system": system, "bucket": bucket, "pairs": len(members),
                         MEASURE: statistics.fmean(ndcg.get(k, 0.0) for k in members) if members else float("nan"),
                         "MRR": statistics.fmean(1.0 / r if r else 0.0 for r in (ranks[k] for k in members))
                         if members else float("nan"),
                         "median_rank": statistics.median(found) if found else float("nan"),
                         "found": len(found) / len(members) if members else float("nan")})
    return pd.DataFrame(rows)


def wide(table: pd.DataFrame, value: str = MEASURE) -> pd.DataFrame:
    """One row per system, one column per bucket (``all``, ``1/8`` ...) of ``value``."""
    buckets = int(table["bucket"].max())
    out = table.pivot(index="system", columns="bucket", values=value)
    out = out.reindex(list(dict.fromkeys(table["system"])))
    out.columns = ["all" if b == 0 else f"{b}/{buckets}" for b in out.columns]
    return out


def plot(table: pd.DataFrame, path: str | Path, *, value: str = MEASURE, title: str | None = None) -> Path:
    """Quality by position bucket, one line per system (PNG; the style of :mod:`rankwise.eval.plots`)."""
    from rankwise.eval.plots import _pyplot, _save

    data = wide(table, value).drop(columns="all")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    x = list(range(1, data.shape[1] + 1))
    for system, row in data.iterrows():
        ax.plot(x, row.to_numpy(), marker="o", markersize=4, label=str(system))
    ax.set_xticks(x, list(data.columns))
    ax.set_xlabel("position of the relevant abstract in the document (bucket)")
    ax.set_ylabel(value)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)
