"""FollowIR: does a retriever or reranker follow an instruction that changes what is relevant?

Weller et al., "FollowIR: Evaluating and Teaching Information Retrieval Models to Follow
Instructions" (2024). Every query is run twice, with its original instruction and with a changed
one under which some documents relevant to the original are no longer relevant. p-MRR compares
the rank of each such document under the two instructions (the paper's Eq. 1, written with
MRR = 1/R):

    p = MRR_og / MRR_new - 1 = R_new / R_og - 1    if R_og > R_new  (it moved up: in [-1, 0))
    p = 1 - MRR_new / MRR_og = 1 - R_og / R_new    otherwise        (it moved down: in [0, 1))

averaged over the query's changed documents, then over the queries that have one. +1 is a
perfect follower, 0 ignores the instruction, -1 does the opposite. A changed document the run
does not retrieve is ranked just after the run's last document (len(run) + 1). nDCG@5 and
MAP@1000 (``AP@1000``) are reported on the original queries, as the paper does.

Folder layout (:class:`FollowIRDataset`), mirroring the fields of the FollowIR datasets on the
Hugging Face hub (``queries`` with ``instruction_og`` / ``instruction_changed``; ``qrels_og`` and
``qrels_changed``)::

    FOLDER/
      corpus.jsonl       BEIR corpus lines: _id, title, text
      queries.jsonl      one object a line: "_id" (or "query-id"), "query" (or "text"),
                         "instruction_og", "instruction_changed"
      qrels/og.tsv       BEIR (or TREC) qrels of the original instructions (qrels_og)
      qrels/changed.tsv  qrels of the changed instructions (qrels_changed)

A document is "changed" when it is relevant (grade > 0) in ``og.tsv`` and judged non-relevant or
not judged in ``changed.tsv``. Each query is run as ``query + " " + instruction``. Every document
the two qrels files judge must be in ``corpus.jsonl``: a line naming another is an error (file,
line, id), or, with ``missing_judged="warn"`` (``--missing-judged warn``), counted in a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankwise.eval.metrics import QrelsLike, RunLike, _run_dict
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, check_judged, iter_lines, json_line, read_qrels

if TYPE_CHECKING:
    from rankwise.eval.experiment import ExperimentResult

SPLITS = ("og", "changed")
FOLLOWIR_MEASURES = ("nDCG@5", "AP@1000")


def pair_score(rank_og: int, rank_new: int) -> float:
    """p of one document ranked ``rank_og`` (original instruction) and ``rank_new`` (changed)."""
    if rank_og < 1 or rank_new < 1:
        raise ValueError("ranks start at 1")
    if rank_og > rank_new:
        return rank_new / rank_og - 1.0
    return 1.0 - rank_og / rank_new


def changed_documents(qrels_og: QrelsLike, qrels_changed: QrelsLike) -> dict[str, list[str]]:
    """Per query, the documents relevant under the original instruction but not under the changed one."""
    out: dict[str, list[str]] = {}
    for qid, docs in qrels_og.items():
        after = qrels_changed.get(qid, {})
        changed = sorted(d for d, g in docs.items() if g > 0 and after.get(d, 0) <= 0)
        if changed:
            out[str(qid)] = changed
    return out


def _ranks(run: RunLike) -> dict[str, dict[str, int]]:
    ordered = _run_dict(run, ignore_identical_ids=False)  # the order eval.metrics uses
    return {q: {d: i + 1 for i, (d, _) in enumerate(sorted(docs.items(), key=lambda x: x[1], reverse=True))}
            for q, docs in ordered.items()}


def p_mrr_per_query(run_og: RunLike, run_changed: RunLike, qrels_og: QrelsLike,
                    qrels_changed: QrelsLike) -> dict[str, float]:
    """``{query_id: p-MRR}`` for each query with at least one changed document (module docstring)."""
    og, new = _ranks(run_og), _ranks(run_changed)
    out: dict[str, float] = {}
    for qid, docs in changed_documents(qrels_og, qrels_changed).items():
        ranks_og, ranks_new = og.get(qid, {}), new.get(qid, {})
        scores = [pair_score(ranks_og.get(d, len(ranks_og) + 1), ranks_new.get(d, len(ranks_new) + 1))
                  for d in docs]
        out[qid] = sum(scores) / len(scores)
    return out


def p_mrr(run_og: RunLike, run_changed: RunLike, qrels_og: QrelsLike, qrels_changed: QrelsLike) -> float:
    """FollowIR's p-MRR: the mean over queries of :func:`p_mrr_per_query`."""
    per_query = p_mrr_per_query(run_og, run_changed, qrels_og, qrels_changed)
    if not per_query:
        raise InputError("no query has a document that the changed instruction makes non-relevant: "
                         "p-MRR is undefined", field="qrels_changed")
    return sum(per_query.values()) / len(per_query)


@dataclass
class FollowQuery:
    """One FollowIR query: its text and its original and changed instructions."""

    query: str
    instruction_og: str
    instruction_changed: str


def read_followir_queries(path: Path) -> dict[str, FollowQuery]:
    """Read ``queries.jsonl`` (fields in the module docstring); a bad line names file, line and field."""
    queries: dict[str, FollowQuery] = {}
    for number, line in iter_lines(path):
        obj = json_line(path, number, line)
        qid_field = "_id" if "_id" in obj else "query-id"
        text_field = "query" if "query" in obj else "text"
        values = {}
        for name in (qid_field, text_field, "instruction_og", "instruction_changed"):
            value = obj.get(name)
            if isinstance(value, int) and name == qid_field:
                value = str(value)
            if not isinstance(value, str) or (name != "instruction_og" and not value.strip()):
                problem = "missing" if value is None else f"expected a non-empty string, got {value!r}"[:80]
                raise InputError(problem, path=path, line=number, field=name)
            values[name] = value
        qid = values[qid_field]
        if qid in queries:
            raise InputError(f"duplicate query id {qid!r}", path=path, line=number, field=qid_field)
        queries[qid] = FollowQuery(values[text_field], values["instruction_og"], values["instruction_changed"])
    if not queries:
        raise InputError("no queries in the file", path=path)
    return queries


@dataclass
class FollowIRDataset:
    """A FollowIR folder (layout in the module docstring); splits ``og`` and ``changed``.

    It has the dataset interface :class:`~rankwise.eval.experiment.Experiment` takes, so any first stage and reranker
    runs on it; ``queries(split)`` joins the query and that split's instruction.
    """

    name: str
    root: Path
    missing_judged: str = "error"  # a judged document not in corpus.jsonl (formats.MISSING_JUDGED)

    def __post_init__(self) -> None:
        for part in ("corpus.jsonl", "queries.jsonl", "qrels/og.tsv", "qrels/changed.tsv"):
            if not (self.root / part).is_file():
                raise InputError(f"not a FollowIR folder: missing {part}", path=self.root)
        self._queries = read_followir_queries(self.root / "queries.jsonl")
        self._qrels = {s: read_qrels(self.root / "qrels" / f"{s}.tsv") for s in SPLITS}
        for split in SPLITS:  # a changed document missing from the corpus would score p-MRR 0 unnoticed
            check_judged(self.root / "qrels" / f"{split}.tsv", self.corpus, self.missing_judged)
        for split, qrels in self._qrels.items():
            unknown = sorted(set(qrels) - set(self._queries))
            if unknown:
                raise InputError(f"query {unknown[0]!r} is judged but not in queries.jsonl",
                                 path=self.root / "qrels" / f"{split}.tsv", field="query-id")

    @property
    def label(self) -> str:
        return self.name

    @property
    def corpus(self) -> Corpus:
        return Corpus(self.root)

    @property
    def ignore_identical_ids(self) -> bool:
        return False

    def official_measures(self, split: str = "og") -> tuple[str, ...]:
        return FOLLOWIR_MEASURES

    def qrels(self, split: str = "og") -> dict[str, dict[str, int]]:
        if split not in SPLITS:
            raise InputError(f"FollowIR splits are og and changed, not {split!r}", field="split")
        return self._qrels[split]

    def queries(self, split: str = "og") -> dict[str, str]:
        """``query + " " + instruction`` of ``split`` for every query judged in ``og``."""
        judged = self.qrels("og")
        out = {}
        for qid, q in self._queries.items():
            if qid in judged:
                instruction = q.instruction_og if split == "og" else q.instruction_changed
                out[qid] = f"{q.query} {instruction}".strip()
        return out


@dataclass
class FollowIRResult:
    """Every system on a FollowIR folder: the experiments on the original and the changed
    instructions, and each system's p-MRR (with its per-query values)."""

    og: ExperimentResult
    changed: ExperimentResult
    p_mrr: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def rows(self) -> dict[str, dict[str, float]]:
        """Per system: p-MRR, the original queries' metrics, then the changed ones' (``"nDCG@5 (changed)"``)."""
        return {name: {"p-MRR": self.p_mrr[name], **self.og.systems[name].metrics,
                       **{f"{m} (changed)": v for m, v in self.changed.systems[name].metrics.items()}}
                for name in self.og.systems}

    def write(self, out: Path) -> None:
        """``out/NAME.og.trec``, ``out/NAME.changed.trec`` and ``out/results.json`` (p-MRR under ``followir``)."""
        from rankwise.eval.experiment import RESULTS_FILE, write_results

        self.og.write_runs(out, suffix=".og")
        self.changed.write_runs(out, suffix=".changed")
        write_results(out / RESULTS_FILE, [self.og, self.changed],
                      followir={name: {"p-MRR": self.p_mrr[name], "per_query": self.per_query[name]}
                                for name in self.p_mrr})


def run_followir(dataset: FollowIRDataset, pipelines: Sequence[Any], *, k: int = 1000,
                 progress: bool = True) -> FollowIRResult:
    """One :class:`~rankwise.eval.experiment.Experiment` per instruction (``og``, ``changed``) sharing
    the corpus, indexes and models; then p-MRR from each system's two runs."""
    from rankwise.eval.experiment import Experiment

    resources: dict[Any, Any] = {}
    og, changed = (Experiment(pipelines, dataset, FOLLOWIR_MEASURES, split=split, k=k, progress=progress,
                              resources=resources) for split in SPLITS)
    og_result, changed_result = og.run(), changed.run()
    p_mrr, per_query = {}, {}
    for name in og_result.systems:
        score = p_mrr_per_query(og_result.runs[name], changed_result.runs[name], dataset.qrels("og"),
                                dataset.qrels("changed"))
        if not score:
            raise InputError("no query has a document that the changed instruction makes non-relevant: "
                             "p-MRR is undefined", path=dataset.root / "qrels" / "changed.tsv")
        per_query[name], p_mrr[name] = score, sum(score.values()) / len(score)
    return FollowIRResult(og_result, changed_result, p_mrr, per_query)
