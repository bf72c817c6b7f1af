"""Screening prioritisation on CLEF TAR topics: the folder reader and the runner.

Technology-assisted review (CLEF eHealth TAR, Kanoulas et al. 2017, 2018) ranks each review's
candidate studies so that reviewers meet every relevant one early. The measures (``Recall@K%``,
``WSS@R``, ``LastRel``) are in :mod:`rankwise.eval.screening_measures`, re-exported here.

CLEF TAR folder (:func:`read_tar`)::

    FOLDER/
      topics/        one CLEF TAR topic file per review ("Topic: CD007394", "Title: ...",
                     "Query:" lines, then "Pids:" and one PMID a line); every file in it is read
      qrels.txt      TREC qrels "TOPIC 0 PMID GRADE", four columns (CLEF TAR's abstract or
                     content qrels); grade > 0 is relevant
      corpus.jsonl   the candidates' texts, BEIR corpus lines with _id = PMID; every candidate
                     PMID must be in it (else an error naming the topic file, line and PMID;
                     ``missing_judged="warn"`` counts them and ranks them last)

Documents the topic lists but the qrels do not judge count as non-relevant.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.eval.screening_measures import (SCREENING_MEASURES, ScreeningMeasure, parse_screening, screening_per_query,
                                      screening_value)
from rankwise.retrieval.formats import iter_lines, iter_qrels, missing_judged_rule
from rankwise.retrieval.pipeline import Pipeline, Stage

log = logging.getLogger(__name__)

__all__ = ["SCREENING_MEASURES", "ScreeningMeasure", "parse_screening", "screening_per_query", "screening_value",
           "TarTopic", "TarCollection", "ScreeningDataset", "Candidates", "read_tar", "restrict_to_candidates",
           "screening_pipelines", "run_screening"]

# --------------------------------------------------------------------------------------------
# CLEF TAR folders.


@dataclass
class TarTopic:
    """One review: its id, title (the text ranked against), Boolean query and candidate PMIDs."""

    topic_id: str
    title: str
    query: str
    pids: list[str]
    path: Path
    pid_lines: dict[str, int] = field(default_factory=dict)  # PMID -> its line in the topic file


_HEADERS = ("topic:", "title:", "query:", "pids:")


def read_topic_file(path: Path) -> TarTopic:
    """Parse one CLEF TAR topic file (``Topic:``, ``Title:``, ``Query:``, ``Pids:`` sections)."""
    sections: dict[str, list[tuple[int, str]]] = {}
    current: str | None = None
    lines = {}
    for number, line in iter_lines(path):
        low = line.strip().lower()
        header = next((h for h in _HEADERS if low.startswith(h)), None)
        if header:
            current = header[:-1]
            if current in sections:
                raise InputError(f"section {header!r} appears twice", path=path, line=number, field=current)
            lines[current] = number
            rest = line.strip()[len(header):].strip()
            sections[current] = [(number, rest)] if rest else []
        elif current is None:
            raise InputError("text before the 'Topic:' line", path=path, line=number, field="topic")
        else:
            sections[current].append((number, line.strip()))
    for name in ("topic", "title", "pids"):
        if not sections.get(name):
            raise InputError(f"missing or empty '{name.capitalize()}:' section", path=path,
                             line=lines.get(name), field=name)
    pid_lines: dict[str, int] = {}
    for number, pid in sections["pids"]:
        if not pid.isdigit() and not re.fullmatch(r"[\w.-]+", pid):
            raise InputError(f"candidate {pid!r} is not a PMID", path=path, line=number, field="pids")
        if pid in pid_lines:
            raise InputError(f"PMID {pid} is listed twice (first on line {pid_lines[pid]})", path=path, line=number,
                             field="pids")
        pid_lines[pid] = number
    text = {name: " ".join(t for _, t in parts) for name, parts in sections.items()}
    return TarTopic(sections["topic"][0][1], text["title"], text.get("query", ""), list(pid_lines), path, pid_lines)


@dataclass
class TarCollection:
    """A CLEF TAR folder read by :func:`read_tar` (layout in the module docstring)."""

    root: Path
    topics: dict[str, TarTopic]
    qrels: dict[str, dict[str, int]]

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"


def read_tar(folder: str | Path, missing_judged: str = "error") -> TarCollection:
    """Read a CLEF TAR folder; a topic without a relevant candidate is an error (WSS is undefined).

    A candidate PMID that ``corpus.jsonl`` lacks is an error naming the topic file, line and PMID;
    with ``missing_judged="warn"`` they are counted in one warning and ranked after every ranked
    candidate (:func:`restrict_to_candidates`).
    """
    root = Path(folder)
    if not (root / "topics").is_dir():
        raise InputError("not a CLEF TAR folder: no topics/ folder", path=root)
    if not (root / "corpus.jsonl").is_file():
        raise InputError("not a CLEF TAR folder: no corpus.jsonl (the candidates' texts, _id = PMID)", path=root)
    topics: dict[str, TarTopic] = {}
    for path in sorted(p for p in (root / "topics").iterdir() if p.is_file() and not p.name.startswith(".")):
        topic = read_topic_file(path)
        if topic.topic_id in topics:
            raise InputError(f"topic {topic.topic_id!r} is also in {topics[topic.topic_id].path}", path=path,
                             field="topic")
        topics[topic.topic_id] = topic
    if not topics:
        raise InputError("no topic files", path=root / "topics")
    qrels_path = root / "qrels.txt"
    qrels: dict[str, dict[str, int]] = {t: {} for t in topics}
    first_line: dict[str, int] = {}
    missing_judged_rule(missing_judged)
    _check_candidates(root, topics, missing_judged)
    for number, qid, did, grade in iter_qrels(qrels_path, columns=(4,)):
        if qid not in topics:
            raise InputError(f"topic {qid!r} has no topic file", path=qrels_path, line=number, field="topic")
        qrels[qid][did] = grade
        first_line.setdefault(qid, number)
    for qid, topic in topics.items():
        candidates = set(topic.pids)
        if not any(g > 0 and d in candidates for d, g in qrels[qid].items()):
            raise InputError(f"topic {qid!r} has no relevant candidate: WSS is undefined",
                             path=qrels_path, line=first_line.get(qid), field="qrels")
        qrels[qid] = {d: g for d, g in qrels[qid].items() if d in candidates}
    return TarCollection(root, topics, qrels)


def _check_candidates(root: Path, topics: Mapping[str, TarTopic], missing: str) -> None:
    """Every candidate PMID must be in ``corpus.jsonl`` (error), or is counted in a warning."""
    from rankwise.retrieval.formats import Corpus

    present = Corpus(root / "corpus.jsonl").present(p for t in topics.values() for p in t.pids)
    absent = [(t, p) for t in topics.values() for p in t.pids if p not in present]
    if not absent:
        return
    topic, pid = absent[0]
    if missing == "error":
        more = f" ({len(absent) - 1} more candidates like it)" if len(absent) > 1 else ""
        raise InputError(f"candidate PMID {pid} of topic {topic.topic_id!r} is not in {root / 'corpus.jsonl'}{more}; "
                         "add its text, or pass --missing-judged warn to rank such candidates last",
                         path=topic.path, line=topic.pid_lines.get(pid), field="pids")
    total = sum(len(t.pids) for t in topics.values())
    log.warning("%s: %d of %d candidate PMIDs are not in corpus.jsonl (first: %s, topic %s); they are ranked after "
                "every ranked candidate (--missing-judged error refuses them)", root, len(absent), total, pid,
                topic.topic_id)


# --------------------------------------------------------------------------------------------
# Running a ranker over each topic's candidates.


@dataclass
class ScreeningDataset:
    """A :class:`TarCollection` with the dataset interface :class:`~rankwise.eval.experiment.Experiment` takes: the
    queries are the topics' titles, the qrels the candidates' judgements."""

    name: str
    tar: TarCollection

    @property
    def label(self) -> str:
        return self.name

    @property
    def corpus(self) -> Any:
        from rankwise.retrieval.formats import Corpus

        return Corpus(self.tar.corpus_path)

    @property
    def ignore_identical_ids(self) -> bool:
        return False

    def official_measures(self, split: str = "test") -> tuple[str, ...]:
        return SCREENING_MEASURES

    def qrels(self, split: str = "test") -> dict[str, dict[str, int]]:
        return self.tar.qrels

    def queries(self, split: str = "test") -> dict[str, str]:
        return {tid: t.title for tid, t in self.tar.topics.items()}


def restrict_to_candidates(run: Any, topics: Mapping[str, TarTopic]) -> Any:
    """Each topic's candidates in ``run``'s order; candidates the run lacks follow in the topic
    file's order, scored below every retrieved one."""
    from rankwise.retrieval.run import Run

    out = {}
    for tid, topic in topics.items():
        candidates = set(topic.pids)
        ranked = [(d, s) for d, s in run.get(tid, []) if d in candidates]
        seen = {d for d, _ in ranked}
        floor = min((s for _, s in ranked), default=0.0)
        ranked += [(d, floor - 1.0 - i) for i, d in enumerate(d for d in topic.pids if d not in seen)]
        out[tid] = ranked
    return Run(out, name=getattr(run, "name", "rankwise"))


@dataclass(frozen=True, eq=False)
class Candidates(Stage):
    """Each topic's candidates in the order of the run before (:func:`restrict_to_candidates`)."""

    topics: Mapping[str, TarTopic]
    kind = "candidates"

    def apply(self, previous: Any, k: int, ctx: Any, record: Any) -> Any:
        return restrict_to_candidates(previous, self.topics)


def screening_pipelines(pipelines: Sequence[Any], tar: TarCollection) -> list[Pipeline]:
    """Each pipeline with its first stage's run cut to the topics' candidates, and every reranker
    reranking all of a topic's candidates."""
    from rankwise.eval.experiment import as_pipeline
    from rankwise.rerank.stage import Rerank

    candidates = Candidates(tar.topics)  # one object: the first stages and the cut are shared
    depth = max(len(t.pids) for t in tar.topics.values())
    out = []
    for pipeline in map(as_pipeline, pipelines):
        first, *rest = pipeline.stages
        rest = [dataclasses.replace(s, depth=depth) if isinstance(s, Rerank) else s for s in rest]
        out.append(Pipeline([first, candidates, *rest], name=pipeline.name))
    return out


def run_screening(dataset: ScreeningDataset, pipelines: Sequence[Any], *, measures: Sequence[str] = SCREENING_MEASURES,
                  k: int | None = None, progress: bool = True) -> Any:
    """Rank every topic's candidates with each pipeline (:func:`screening_pipelines`) and evaluate them
    with ``measures`` (default: Recall@10%, WSS@95, LastRel): an
    :class:`~rankwise.eval.experiment.ExperimentResult`. The first stage searches the whole corpus to
    depth ``k`` (default: all of it)."""
    from rankwise.eval.experiment import Experiment

    corpus_size = k if k is not None else len(dataset.corpus)
    return Experiment(screening_pipelines(pipelines, dataset.tar), dataset, list(measures), k=corpus_size,
                      progress=progress).run()
