"""One ``Experiment``: pipelines on a dataset, each shared prefix computed once, compared with a baseline.

As PyTerrier's ``Experiment`` (Macdonald et al., CIKM 2021)::

    result = Experiment(["bm25", "dense", "bm25>>cross-encoder:M"], "scifact", ["nDCG@10", "R@100"],
                        baseline="bm25", test="t", correction="holm").run()
    print(result.table)                    # one row per system, one column per measure (pandas)

A pipeline is a :class:`~rankwise.retrieval.pipeline.Pipeline` (``BM25() >> reranker % 100``), any
retriever, a system spec of :func:`rankwise.eval.systems.parse_system`, or a :class:`Run` computed before
(``Run.read("bm25.trec")``; ``rankwise compare`` compares run files so, on a dataset or a qrels file). Every prefix of every
pipeline is computed once per experiment, keyed by its stages (stages compare equal when they compute
the same thing), so ``bm25`` and ``bm25>>cross-encoder:M`` search BM25 once; indexes are the corpus's
cached ones and every model is loaded once. Each stage is timed. The result holds the metrics table,
the per-query values, the comparison (paired tests and corrections of :mod:`rankwise.eval.compare`),
the runs, plots on request (:mod:`rankwise.eval.plots`), and the one results-file layout
(:func:`results_document`) every evaluation command writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankwise.eval.compare import check_comparison, compare_per_query, flat_rows, per_query_values
from rankwise.eval.metrics import evaluate, parse_measures
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.pipeline import Context, Pipeline
from rankwise.retrieval.run import Run

if TYPE_CHECKING:
    import pandas as pd

RESULTS_SCHEMA = "rankwise.results"
RESULTS_VERSION = 2
RESULTS_FILE = "results.json"


def auto_depth(measures: Iterable[Any], default: int = 100) -> int:
    """Documents per query when no ``k`` is given: ``default``, or the deepest cut-off of the measures
    (1000 for TREC DL's R(rel=2)@1000)."""
    depth = default
    for measure in parse_measures(list(measures)):
        cutoff = measure.params.get("cutoff")
        if isinstance(cutoff, int):
            depth = max(depth, cutoff)
    return depth


def query_seconds(timings: Mapping[str, float]) -> float:
    """Query-time cost of a system: its searches plus reranking (index building excluded)."""
    return sum(v for k, v in timings.items() if k.endswith("_search_s") or k.startswith("rerank"))


def drops_self_hits(dataset: Any, choice: bool | None = None) -> bool:
    """Whether a retrieved document whose id is the query's is dropped before scoring: ``choice``
    (``--drop-self-hits`` / ``--keep-self-hits``) when given, else the dataset's rule: on for BEIR
    datasets (BEIR's evaluation drops them), off where query and document ids are separate (MS MARCO,
    TREC, irds, plain qrels files)."""
    return bool(dataset.ignore_identical_ids) if choice is None else choice


def as_pipeline(system: Any) -> Pipeline:
    """A pipeline from a :class:`Pipeline`, a stage or retriever, or a system spec string."""
    if isinstance(system, Pipeline):
        return system
    if isinstance(system, str):
        from rankwise.eval.systems import parse_system

        return parse_system(system)
    return Pipeline.of(system)


@dataclass
class SystemResult:
    """One pipeline on the experiment's queries: its run, metrics, stage timings and what it used."""

    name: str
    pipeline: Pipeline
    run: Run
    metrics: dict[str, float]
    components: dict[str, dict[str, float]] = field(default_factory=dict)  # metrics of intermediate runs
    timings: dict[str, float] = field(default_factory=dict)  # "<stage>_index_s", "<stage>_search_s", "rerank_s"
    stats: dict[str, Any] = field(default_factory=dict)  # per stage kind, e.g. "rerank": RerankStats
    models: dict[str, str | None] = field(default_factory=dict)  # role -> fingerprint
    reused: list[str] = field(default_factory=list)  # stages another system of the experiment computed first

    @property
    def query_seconds(self) -> float:
        return query_seconds(self.timings)

    def to_json(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline.describe(), "metrics": self.metrics, "components": self.components,
                "timings": self.timings, "query_seconds": self.query_seconds, "stats": self.stats,
                "models": self.models, "reused": self.reused}


@dataclass
class ExperimentResult:
    """What :meth:`Experiment.run` returns (see the module docstring)."""

    dataset: str
    split: str
    queries: int
    k: int
    measures: list[str]
    systems: dict[str, SystemResult]
    per_query: pd.DataFrame  # long form: system, query_id, measure, value
    comparison: pd.DataFrame  # rankwise.eval.compare's table: (measure, stat) columns
    seed: int = 0
    drop_self_hits: bool = True  # a retrieved document whose id is the query's was dropped before scoring
    missing_judged: str = "warn"  # what a judged document missing from the corpus did (formats.MISSING_JUDGED)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return str(self.comparison.attrs["baseline"])

    @property
    def table(self) -> pd.DataFrame:
        """Metrics: one row per system, one column per measure."""
        import pandas as pd

        return pd.DataFrame({name: r.metrics for name, r in self.systems.items()}).T.rename_axis("system")

    @property
    def runs(self) -> dict[str, Run]:
        return {name: r.run for name, r in self.systems.items()}

    def plot(self, folder: str | Path, *, measure: str | None = None, title: str | None = None) -> dict[str, str]:
        """Write ``per-query-delta.png`` (with two systems or more) and ``quality-cost.png`` into ``folder``."""
        from rankwise.eval.plots import comparison_plots

        costs = {name: r.query_seconds for name, r in self.systems.items()}
        written = comparison_plots(self.comparison, self.per_query, Path(folder), costs=costs, measure=measure,
                                   title=title or f"{self.dataset} ({self.split})")
        self.files.update(written)
        return written

    def write_runs(self, folder: str | Path, *, suffix: str = "") -> dict[str, Path]:
        """Each system's run as ``folder/<system as a file name><suffix>.trec`` (TREC format)."""
        from rankwise.eval.plots import file_label

        paths = {}
        for name, system in self.systems.items():
            label = file_label(name) + suffix
            paths[name] = Path(folder) / f"{label}.trec"
            system.run.write(paths[name], tag=f"rankwise-{label}")
        return paths

    def write_per_query(self, path: str | Path) -> Path:
        """The per-query values as CSV: ``system,query_id,measure,value``."""
        from rankwise.retrieval.files import atomic_open

        with atomic_open(path) as fh:
            self.per_query.to_csv(fh, index=False, lineterminator="\n", float_format="%.10g")
        self.files["per_query"] = str(path)
        return Path(path)

    def save(self, out: str | Path) -> Path:
        """The runs (:meth:`write_runs`) and ``results.json`` of this experiment alone, in ``out``."""
        self.write_runs(out)
        return write_results(Path(out) / RESULTS_FILE, [self])

    def to_json(self) -> dict[str, Any]:
        """This experiment's entry of the results file."""
        attrs = self.comparison.attrs
        return {"dataset": self.dataset, "split": self.split, "queries": self.queries, "k": self.k,
                "measures": self.measures, "drop_self_hits": self.drop_self_hits,
                "missing_judged": self.missing_judged, "baseline": self.baseline, "test": attrs["test"],
                "correction": attrs["correction"], "significance": attrs["alpha"], "seed": self.seed,
                "systems": {name: r.to_json() for name, r in self.systems.items()},
                "comparison": flat_rows(self.comparison), "files": dict(self.files)}


class Experiment:
    """``pipelines`` on ``dataset`` (a name, folder or resolved dataset), compared with ``baseline``.

    ``measures``: ir-measures names (default: the dataset's official ones). ``baseline``: a system's
    name or index (default: the first). ``test``: ``t`` or ``randomization``; ``correction``: ``holm``,
    ``bonferroni`` or ``none``; ``alpha``: the significance level of the markers. ``k``: documents per
    query (default: 100, or the deepest cut-off of the measures). ``names``: the systems' names
    (default: each pipeline's ``name``). Everything is checked here, before any work; :meth:`run`
    does the work. ``resources`` (a dict) lets several experiments on one corpus share indexes and models.
    """

    def __init__(self, pipelines: Sequence[Any], dataset: Any, measures: str | Iterable[Any] | None = None, *,
                 baseline: str | int | None = None, test: str = "t", correction: str = "holm",
                 alpha: float = 0.05, seed: int = 0, split: str = "test", k: int | None = None,
                 names: Sequence[str] | None = None, drop_self_hits: bool | None = None,
                 missing_judged: str = "warn", progress: bool = True,
                 resources: dict[Any, Any] | None = None) -> None:
        check_comparison(test, correction, alpha)
        self.pipelines = [as_pipeline(p) for p in pipelines]
        if not self.pipelines:
            raise InputError("an experiment needs at least one pipeline", field="systems")
        self.names = list(names) if names is not None else [p.name for p in self.pipelines]
        if len(self.names) != len(self.pipelines):
            raise InputError(f"{len(self.names)} names for {len(self.pipelines)} pipelines", field="names")
        twice = sorted({n for n in self.names if self.names.count(n) > 1})
        if twice:
            raise InputError(f"two systems are named {twice[0]!r}: give each its own name", field="systems")
        if isinstance(baseline, int) and not isinstance(baseline, bool):
            if not 0 <= baseline < len(self.names):
                raise InputError(f"baseline {baseline} is not a system's index (0..{len(self.names) - 1})",
                                 field="baseline")
            baseline = self.names[baseline]
        if baseline is not None and baseline not in self.names:
            raise InputError(f"the baseline {baseline!r} is not one of the systems ({', '.join(self.names)})",
                             field="baseline")
        self.baseline = baseline or self.names[0]
        if measures is not None and not isinstance(measures, str):
            measures = list(measures)
        if measures is not None and len(measures) == 0:
            measures = None
        if measures is not None:
            parse_measures(measures)  # a bad name fails before any work
        if isinstance(dataset, (str, Path)):
            from rankwise.eval.datasets import resolve_dataset

            dataset = resolve_dataset(dataset, progress=progress)
        self.dataset = dataset
        self.split = split
        self.measures = [str(m) for m in parse_measures(measures or dataset.official_measures(split))]
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive integer, got {k!r}", field="k")
        self.k = k if k is not None else auto_depth(self.measures)
        from rankwise.retrieval.formats import missing_judged_rule

        missing_judged_rule(missing_judged)
        self.test, self.correction, self.alpha, self.seed = test, correction, alpha, seed
        self.drop_self_hits, self.missing_judged = drops_self_hits(dataset, drop_self_hits), missing_judged
        self.progress = progress
        self.resources = {} if resources is None else resources

    def run(self) -> ExperimentResult:
        """Run every pipeline (shared prefixes once), evaluate, compare; see :class:`ExperimentResult`."""
        from rankwise.eval.provenance import model_fingerprint

        dataset = self.dataset
        queries = dataset.queries(self.split)
        qrels = dataset.qrels(self.split)
        identical = self.drop_self_hits
        corpus = self.resources.setdefault(("corpus", getattr(dataset, "root", id(dataset))), (dataset.corpus, 0.0))[0]
        from rankwise.eval.datasets import BeirDataset

        reads_corpus = any(s.reads_corpus for p in self.pipelines for s in p.stages)
        if isinstance(dataset, BeirDataset) and reads_corpus:  # a judged document the corpus lacks is named up front
            from rankwise.retrieval.formats import check_judged

            self.resources.setdefault(("judged", self.split, getattr(dataset, "root", id(dataset))), (
                check_judged(dataset.qrels_path(self.split), corpus, self.missing_judged), 0.0))
        ctx = Context(queries, corpus, name=dataset.name, progress=self.progress, resources=self.resources)
        evaluated: dict[int, dict[str, float]] = {}

        def metrics_of(run: Run) -> dict[str, float]:
            if id(run) not in evaluated:
                evaluated[id(run)] = evaluate(run, qrels, self.measures, ignore_identical_ids=identical)
            return evaluated[id(run)]

        systems: dict[str, SystemResult] = {}
        keep: list[Run] = []  # the evaluated runs stay alive, so that their ids stay theirs
        for name, pipeline in zip(self.names, self.pipelines):
            result = SystemResult(name, pipeline, Run(), {})
            for i in range(len(pipeline.stages)):
                step = ctx.step(pipeline.stages[: i + 1], self.k)
                for key, value in step.timings.items():
                    result.timings[key if key not in result.timings or i == 0 else f"{key}@{i}"] = value
                for role, model in step.models.items():
                    key = ("fingerprint", role, model if isinstance(model, str) else id(model))
                    result.models[role] = ctx.resource(key, lambda m=model: model_fingerprint(m) if m else None)[0]
                for kind, stats in step.stats.items():
                    result.stats[kind] = stats
                for label, run in step.components.items():
                    keep.append(run)
                    result.components[label] = metrics_of(run)
                if step.reused:
                    result.reused.append(pipeline.stages[i].label)
            run = Run(step.run, name=name)
            keep.append(step.run)
            result.run = run
            result.metrics = metrics_of(step.run)
            systems[name] = result
        values = per_query_values({n: s.run for n, s in systems.items()}, qrels, self.measures,
                                  ignore_identical_ids=identical, strict=False)
        comparison = compare_per_query(values, baseline=self.baseline, test=self.test, correction=self.correction,
                                       alpha=self.alpha, seed=self.seed)
        return ExperimentResult(dataset.label, self.split, len(queries), self.k, self.measures, systems, values,
                                comparison, seed=self.seed, drop_self_hits=identical,
                                missing_judged=self.missing_judged)


def run_datasets(pipelines: Sequence[Any], datasets: Sequence[Any], *, out: Path | None = None,
                 plot: Path | None = None, per_query: Path | None = None,
                 on_result: Any = None, **options: Any) -> list[ExperimentResult]:
    """One :class:`Experiment` per dataset (all checked before any work), run in turn.

    With ``out``: each dataset's runs in ``out/<dataset>/`` and ``out/results.json`` rewritten after each
    dataset; ``plot``: the plots in that folder (``plot/<dataset>/`` for several datasets);
    ``per_query``: the per-query CSV (``NAME-<dataset>.csv`` for several). ``on_result(result)`` is
    called after each dataset; ``options`` are :class:`Experiment`'s.
    """
    from rankwise.eval.plots import file_label

    experiments = [Experiment(pipelines, dataset, **options) for dataset in datasets]
    several = len(experiments) > 1
    results: list[ExperimentResult] = []
    for experiment in experiments:
        result = experiment.run()
        label = file_label(result.dataset)
        if per_query is not None:
            result.write_per_query(per_query.with_name(f"{per_query.stem}-{label}{per_query.suffix}")
                                   if several else per_query)
        if plot is not None:
            result.plot(plot / label if several else plot)
        results.append(result)
        if out is not None:
            result.write_runs(out / result.dataset)
            write_results(out / RESULTS_FILE, results)
        if on_result is not None:
            on_result(result)
    return results


# --------------------------------------------------------------------------------------------
# The results file.


def results_document(results: Sequence[ExperimentResult], **extra: Any) -> dict[str, Any]:
    """The one ``results.json`` layout: schema and version, provenance, one entry per experiment
    (:meth:`ExperimentResult.to_json`), then what a command adds (``extra``, e.g. FollowIR's p-MRR)."""
    from rankwise.eval.provenance import provenance

    return {"schema": RESULTS_SCHEMA, "version": RESULTS_VERSION, "provenance": provenance(),
            "experiments": [r.to_json() for r in results], **extra}


def write_results(path: str | Path, results: Sequence[ExperimentResult], **extra: Any) -> Path:
    """Write :func:`results_document` atomically to ``path``."""
    from rankwise.retrieval.files import write_json

    write_json(Path(path), results_document(results, **extra))
    return Path(path)


def read_query_seconds(path: str | Path) -> dict[str, float]:
    """System name (and its file name) -> query seconds, from a results file: this layout, or the
    older layouts of ``rankwise beir`` (``datasets`` -> ``systems`` / ``timings``)."""
    from rankwise.eval.plots import file_label

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema") == RESULTS_SCHEMA:
            entries = [(n, s["timings"]) for e in doc["experiments"] for n, s in e["systems"].items()]
        else:
            entries = []
            for entry in doc["datasets"].values():
                if "systems" in entry:
                    entries += [(n, s.get("timings", {})) for n, s in entry["systems"].items()]
                elif "timings" in entry:  # one system: named as its run file, <retriever>[+<paradigm>]
                    settings = doc.get("settings", {})
                    name = "hybrid-" + settings.get("fusion", "rrf") if settings.get("retriever") == "hybrid" \
                        else settings.get("retriever", "bm25")
                    if settings.get("reranker"):
                        name += "+" + str(settings["reranker"]).partition(":")[0]
                    entries.append((name, entry["timings"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"not a results.json of rankwise ({type(err).__name__}: {err})", path=path) from None
    out: dict[str, float] = {}
    for name, timings in entries:
        out[name] = out[file_label(name)] = query_seconds(timings)
    return out
