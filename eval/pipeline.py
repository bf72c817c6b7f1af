"""BEIR pipelines: resolve a dataset, index it (reusing a cached index), retrieve, evaluate.

Indexes are cached by :mod:`rankwise.retrieval.cached` under ``$RANKWISE_CACHE/indexes/<dataset>-<corpus sha256[:16]>/``
(the same code hard-negative mining uses) and reused when their manifest matches the corpus,
encoder and index settings.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rankwise.eval.datasets import BeirDataset, resolve_dataset
from rankwise.eval.metrics import DEFAULT_MEASURES, evaluate
from rankwise.retrieval import cached
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import write_json
from rankwise.retrieval.formats import MISSING_JUDGED, check_judged
from rankwise.retrieval.hybrid import FUSIONS, fuse
from rankwise.retrieval.index import IndexConfig
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.run import Run

RETRIEVERS = ("bm25", "dense", "hybrid")


@dataclasses.dataclass
class PipelineSettings:
    """Everything that defines a first-stage BEIR pipeline."""

    retriever: str = "bm25"
    model: str = DEFAULT_ENCODER
    split: str = "test"
    k: int = 100
    index_type: str = "flat"
    fusion: str = "rrf"
    alpha: float = 0.5
    fusion_depth: int = 1000
    batch_size: int = 64
    backend: str = "torch"
    int8: bool = False
    measures: tuple[str, ...] = DEFAULT_MEASURES
    reranker: str | None = None
    depth: int = 100
    first_stage_weight: float = 0.0
    drop_self_hits: bool | None = None  # None: the dataset's rule (see drops_self_hits)
    missing_judged: str = "warn"  # a BEIR qrels line naming a document not in the corpus (formats.MISSING_JUDGED)

    def __post_init__(self) -> None:
        if self.missing_judged not in MISSING_JUDGED:
            raise InputError(f"--missing-judged is error or warn, not {self.missing_judged!r}", field="missing_judged")
        if self.retriever not in RETRIEVERS:
            raise InputError(f"unknown retriever {self.retriever!r}; choose from {', '.join(RETRIEVERS)}", field="retriever")
        if self.fusion not in FUSIONS:
            raise InputError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}", field="fusion")
        if self.reranker:
            from rankwise.rerank.spec import parse_spec

            parse_spec(self.reranker)  # fail before any indexing
        if not 0.0 <= self.first_stage_weight < 1.0:
            raise InputError(f"the first-stage weight must be in [0, 1), got {self.first_stage_weight}",
                             field="first_stage_weight")
        if self.first_stage_weight and not self.reranker:
            raise InputError("a first-stage weight mixes the first stage with a reranker: add --reranker",
                             field="first_stage_weight")

    @property
    def label(self) -> str:
        first = f"hybrid-{self.fusion}" if self.retriever == "hybrid" else self.retriever
        if self.reranker:
            from rankwise.rerank.spec import parse_spec

            mix = f"(w={self.first_stage_weight:g})" if self.first_stage_weight else ""
            return f"{first}+{parse_spec(self.reranker).paradigm}{mix}"
        return first


@dataclasses.dataclass
class DatasetResult:
    """Metrics, run and timings of one pipeline on one dataset."""

    dataset: str
    metrics: dict[str, float]
    run: Run
    timings: dict[str, float]
    queries: int
    components: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    rerank_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: dict[str, str | None] = dataclasses.field(default_factory=dict)
    drop_self_hits: bool = True


def drops_self_hits(dataset: Any, choice: bool | None = None) -> bool:
    """Whether a retrieved document whose id is the query's is dropped before scoring: ``choice``
    (``--drop-self-hits`` / ``--keep-self-hits``) when given, else the dataset's rule: on for BEIR
    datasets (BEIR's evaluation drops them), off where query and document ids are separate (MS MARCO,
    TREC, irds, plain qrels files)."""
    return bool(dataset.ignore_identical_ids) if choice is None else choice


def bm25_index(dataset: BeirDataset, progress: bool = True) -> Path:
    """The cached BM25 index of ``dataset`` (see :func:`rankwise.retrieval.cached.bm25_index`)."""
    return cached.bm25_index(dataset.corpus, name=dataset.name, progress=progress)


def dense_index(dataset: BeirDataset, encoder: Any, config: IndexConfig, progress: bool = True) -> Path:
    """The cached dense index of ``dataset`` (see :func:`rankwise.retrieval.cached.dense_index`)."""
    return cached.dense_index(dataset.corpus, encoder, config, name=dataset.name, progress=progress)


def run_pipeline(dataset: BeirDataset, settings: PipelineSettings, progress: bool = True, *,
                 shared: dict[Any, Any] | None = None) -> DatasetResult:
    """Index (cached), retrieve and evaluate one dataset.

    ``shared``, one dict passed to several pipelines on the same dataset, keeps the corpus, the
    encoders and every first-stage run, so that systems with a common first stage compute it once
    (their timings are those of the computation). Empty ``settings.measures``: the dataset's
    official measures.
    """
    shared = {} if shared is None else shared
    qrels = dataset.qrels(settings.split)
    queries = dataset.queries(settings.split)
    measures = settings.measures or dataset.official_measures(settings.split)
    identical = drops_self_hits(dataset, settings.drop_self_hits)
    timings: dict[str, float] = {}
    runs: dict[str, Run] = {}
    models: dict[str, str | None] = {}
    depth = settings.k if settings.retriever != "hybrid" else max(settings.k, settings.fusion_depth)

    if "corpus" not in shared:
        shared["corpus"] = dataset.corpus  # one object: the corpus is hashed once
    corpus = shared["corpus"]
    if isinstance(dataset, BeirDataset) and ("judged", settings.split) not in shared:
        shared["judged", settings.split] = check_judged(dataset.qrels_path(settings.split), corpus,
                                                        settings.missing_judged)
    model: Any = settings.model
    if settings.retriever in ("dense", "hybrid"):
        from rankwise.retrieval.encoder import Encoder

        key = ("encoder", settings.model, settings.backend, settings.int8, settings.batch_size)
        if key not in shared:
            from rankwise.retrieval.backend.calibration import corpus_calibration

            shared[key] = Encoder(settings.model, backend=settings.backend, int8=settings.int8,
                                  batch_size=settings.batch_size,  # openvino-int8: calibrated on the corpus
                                  calibration=lambda: corpus_calibration(corpus))  # not timed
        model = shared[key]
        models["encoder"] = model.fingerprint
    for kind in ("bm25", "dense"):
        if settings.retriever not in (kind, "hybrid"):
            continue
        key = ("run", kind, depth, settings.split, settings.index_type, settings.backend, settings.batch_size,
               *((settings.model, settings.int8) if kind == "dense" else ()))
        if key not in shared:
            t = time.perf_counter()
            retriever = cached.cached_retriever(corpus, kind, model, name=dataset.name,
                                                index_type=settings.index_type, backend=settings.backend,
                                                batch_size=settings.batch_size, progress=progress)
            index_s = time.perf_counter() - t
            t = time.perf_counter()
            shared[key] = (retriever.search(queries, k=depth, progress=progress), index_s, time.perf_counter() - t)
        runs[kind], timings[f"{kind}_index_s"], timings[f"{kind}_search_s"] = shared[key]

    components: dict[str, dict[str, float]] = {}
    if settings.retriever == "hybrid":
        run = fuse(runs["bm25"], runs["dense"], fusion=settings.fusion, alpha=settings.alpha,
                   depth=settings.fusion_depth).top(settings.k)
        components = {name: evaluate(r.top(settings.k), qrels, measures, ignore_identical_ids=identical)
                      for name, r in runs.items()}
    else:
        run = runs[settings.retriever].top(settings.k)  # a copy: the shared run keeps its name
    stats: dict[str, Any] = {}
    if settings.reranker:
        from rankwise.rerank.spec import load_reranker

        components["first-stage"] = evaluate(run, qrels, measures, ignore_identical_ids=identical)
        # --backend / --int8 also reach the reranker unless its spec names its own
        reranker = load_reranker(settings.reranker, batch_size=None, backend=settings.backend, int8=settings.int8)
        t = time.perf_counter()
        run = reranker.rerank_run(run, queries, dataset.corpus, depth=settings.depth, progress=progress,
                                  first_stage_weight=settings.first_stage_weight)
        timings["rerank_s"] = time.perf_counter() - t
        stats = dataclasses.asdict(reranker.stats)
        key = ("reranker-fingerprint", settings.reranker)
        if key not in shared:
            from rankwise.eval.provenance import model_fingerprint
            from rankwise.rerank.spec import parse_spec

            shared[key] = model_fingerprint(parse_spec(settings.reranker).model)
        models["reranker"] = shared[key]
    run.name = settings.label
    metrics = evaluate(run, qrels, measures, ignore_identical_ids=identical)
    return DatasetResult(dataset.label, metrics, run, timings, len(queries), components, stats, models, identical)


def run_beir(datasets: list[Any], settings: PipelineSettings, *, out: Path | None = None,
             progress: bool = True) -> list[DatasetResult]:
    """Run the pipeline on each dataset (a name, folder or resolved dataset); with ``out``, write
    ``<dataset>/<label>.trec`` and ``results.json``."""
    resolved = [resolve_dataset(d, progress=progress) if isinstance(d, (str, Path)) else d for d in datasets]
    results = []
    for dataset in resolved:
        result = run_pipeline(dataset, settings, progress)
        results.append(result)
        if out is not None:
            result.run.write(out / result.dataset / f"{settings.label}.trec", tag=f"rankwise-{settings.label}")
            write_json(out / "results.json", results_document(results, settings))
    return results


def results_document(results: list[DatasetResult], settings: PipelineSettings) -> dict[str, Any]:
    """The results JSON: settings, and for each dataset its metrics, component metrics and timings."""
    from rankwise.eval.provenance import provenance

    return {
        "provenance": provenance(),
        "settings": dataclasses.asdict(settings),
        "datasets": {r.dataset: {"metrics": r.metrics, "components": r.components, "timings": r.timings,
                                 "queries": r.queries, "rerank_stats": r.rerank_stats, "models": r.models,
                                 "drop_self_hits": r.drop_self_hits}
                     for r in results},
    }
