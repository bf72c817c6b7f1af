"""Static hard negatives mined from a first-stage ranking, optionally cleaned by a teacher.

For each judged query, the retriever ranks the corpus and the negatives are drawn from a window of
that ranking, ``ranked[a:b]`` (0-based, as ``range_min`` / ``range_max`` in sentence-transformers'
``mine_hard_negatives``), never from the documents judged relevant. Skipping the very top ``a``
ranks avoids most unlabelled positives (Qu et al., "RocketQA", NAACL 2021); sampling at random
inside the window rather than taking the top keeps the negatives varied (Xiong et al., "ANCE",
ICLR 2021; Zhan et al., "STAR/ADORE", SIGIR 2021).

A teacher (any :class:`rankwise.rerank.base.Reranker`, e.g. a trained cross-encoder) scores the positive and
the candidates; a candidate scoring above ``teacher(positive) - margin`` is taken for a false
negative and dropped, the margin-based filtering of CoRNStack (Suresh et al., 2024) and LG-ANNA
(Nguyen et al., 2023). The teacher's scores can be written beside the triples in the Margin-MSE
format of Hofstätter et al. ("Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation", 2020): ``score_pos \\t score_neg \\t query_id \\t pos_id \\t neg_id``.

The teacher does not score the whole window (a cross-encoder over 90 candidates of every query
costs more than the training it serves): per query it scores a *pool* of ``teacher_pool x
negatives`` candidates drawn from the window as the negatives would be (at random, or the best
ranked with ``sampling="top"``), and the negatives are then drawn from the pool's candidates that
pass the margin. ``teacher_pool=0`` scores the whole window.

Mining is resumable: queries (sorted by id) are mined in chunks, each finished chunk is saved in
``<out>.work/``, and a re-run with the same settings keeps the finished chunks and mines the others.
Under ``torchrun`` (``torchrun --nproc_per_node N -m rankwise mine ...``) rank ``r`` mines the chunks
``n % N == r`` with its teacher on its own device and rank 0 joins the chunks: the triples and scores
are the files one process writes (:mod:`rankwise.retrieval.distributed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from rankwise.retrieval.docstore import DocStore
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open, sha256_file, write_json
from rankwise.retrieval.formats import Corpus, iter_lines, read_qrels, read_queries
from rankwise.retrieval.progress import CostBar
from rankwise.retrieval.distributed import ShardedJob, device_for_rank
from rankwise.retrieval.workdir import concatenate, part_path

if TYPE_CHECKING:
    from rankwise.rerank.base import Reranker
    from rankwise.retrieval.retriever import Retriever

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "top")
FORMAT_VERSION = 1
WORK_SUFFIX = ".work"

QueriesLike = str | Path | Mapping[str, str]
QrelsLike = str | Path | Mapping[str, Mapping[str, int]]


@dataclasses.dataclass
class MiningStats:
    """What a mining run did (counts over all chunks, resumed ones included)."""

    queries: int = 0  #: judged queries
    no_positives: int = 0  #: judged queries with no relevant document (skipped)
    positives: int = 0  #: (query, positive) pairs mined
    short: int = 0  #: queries where some positive got fewer negatives than requested
    teacher_dropped: int = 0  #: (positive, candidate) pairs dropped by the teacher as likely false negatives
    triples: int = 0  #: triple lines written
    chunks: int = 0  #: chunks in all
    resumed_chunks: int = 0  #: chunks found finished by an earlier run

    def add(self, other: MiningStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def parse_rank_window(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``, the 0-based rank window ``ranked[A:B]`` (``0 <= A < B``; ``":B"`` is ``0:B``)."""
    a, sep, b = text.partition(":")
    try:
        window = (int(a.strip() or 0), int(b)) if sep else None
    except ValueError:
        window = None
    if window is None or not 0 <= window[0] < window[1]:
        raise InputError(f"{text!r} is not a rank window A:B with 0 <= A < B (e.g. 10:100: ranks 10 to 99, "
                         "0-based)", field="rank_window")
    return window


def _check_window(window: Sequence[int]) -> tuple[int, int]:
    if (len(window) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in window)
            or not 0 <= window[0] < window[1]):
        raise InputError(f"rank window {tuple(window)!r} needs integers 0 <= A < B", field="rank_window")
    return int(window[0]), int(window[1])


# ---------------------------------------------------------------------------------------------
# Inputs


def _load_queries(queries: QueriesLike) -> tuple[dict[str, str], Path | None]:
    if isinstance(queries, Mapping):
        return {str(q): str(t) for q, t in queries.items()}, None
    path = Path(queries)
    if path.is_dir():
        path = next((path / n for n in ("queries.jsonl", "queries.tsv") if (path / n).is_file()), path)
    return read_queries(path), path


def _load_qrels(qrels: QrelsLike) -> tuple[dict[str, dict[str, int]], Path | None]:
    if isinstance(qrels, Mapping):
        return {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}, None
    return read_qrels(qrels), Path(qrels)


def _qrels_where(path: Path | None, *, qid: str | None = None, did: str | None = None) -> int | None:
    """The first line of a qrels file naming ``qid`` (or ``did``)."""
    if path is None:
        return None
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) in (3, 4):
            q, d = cols[0], cols[-2]
            if (qid is not None and q == qid) or (did is not None and d == did):
                return number
    return None


def _check_inputs(corpus: Corpus, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                  qrels_path: Path | None, queries_path: Path | None, progress: bool) -> None:
    """Every judged query has text, every judged document is in the corpus."""
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        where = f" of {queries_path}" if queries_path else ""
        raise InputError(f"query {missing_q[0]!r} is judged but not in the queries{where} "
                         f"({len(missing_q)} such queries)", path=qrels_path,
                         line=_qrels_where(qrels_path, qid=missing_q[0]), field="query-id")
    wanted = {d for docs in qrels.values() for d in docs}
    for doc in tqdm(corpus, desc="mining: checking judged documents", unit="doc", disable=not progress,
                    file=sys.stderr, leave=False):
        wanted.discard(doc.doc_id)
        if not wanted:
            break
    if wanted:
        first = next((d for docs in qrels.values() for d in docs if d in wanted))
        raise InputError(f"document {first!r} is judged but not in the corpus {corpus.path} "
                         f"({len(wanted)} such documents)", path=qrels_path,
                         line=_qrels_where(qrels_path, did=first), field="corpus-id")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _describe_retriever(retriever: Any) -> dict[str, Any]:
    """What makes a retriever's rankings what they are (recorded to refuse resuming with another one)."""
    describe = getattr(retriever, "describe", None)
    if callable(describe):
        return describe()
    out: dict[str, Any] = {"class": type(retriever).__qualname__}
    if hasattr(retriever, "first") and hasattr(retriever, "second"):  # HybridRetriever
        out.update(fusion=retriever.fusion, rrf_k=retriever.rrf_k, alpha=retriever.alpha, depth=retriever.depth,
                   first=_describe_retriever(retriever.first), second=_describe_retriever(retriever.second))
        return out
    index = getattr(retriever, "index", None)
    manifest = getattr(index, "manifest", None) or getattr(retriever, "manifest", None)
    if isinstance(manifest, dict):
        out["index"] = {"kind": manifest.get("kind"), "source": manifest.get("source", {}).get("sha256"),
                        "config": manifest.get("config"), "bm25": manifest.get("bm25")}
    encoder = getattr(retriever, "encoder", None)
    if encoder is not None:
        out["encoder"] = getattr(encoder, "fingerprint", None)
    for name in ("k1", "b"):
        if hasattr(retriever, name):
            out[name] = getattr(retriever, name)
    return out


def _describe_teacher(teacher: Any) -> Any:
    if teacher is None or isinstance(teacher, str):
        return teacher
    model = getattr(teacher, "model_name", None) or getattr(teacher, "path", None)
    return {"class": type(teacher).__qualname__, "name": getattr(teacher, "name", None),
            "model": None if model is None else str(model)}


# ---------------------------------------------------------------------------------------------
# Mining one chunk


_TSV_UNSAFE = str.maketrans({c: " " for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})  # str.splitlines' breaks


def _clean(text: str) -> str:
    """One TSV field: tabs and line breaks become spaces (nothing else changes)."""
    return text.translate(_TSV_UNSAFE)


def _doc_texts(store: DocStore, ids: set[str]) -> dict[str, str]:
    """Texts of ``ids`` (title and text, as the encoders and rerankers read them), by random access."""
    ordered = sorted(ids)
    return {d: doc.full_text for d, doc in zip(ordered, store.get_many(ordered))}


@dataclasses.dataclass
class _Job:
    corpus: Corpus
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    retriever: Any
    window: tuple[int, int]
    negatives: int
    sampling: str
    seed: int
    teacher: Reranker | None
    margin: float | None
    text: bool
    scores: bool
    store: DocStore | None = None
    teacher_pool: int = 4

    def mine(self, qids: list[str]) -> tuple[list[str], list[str], MiningStats]:
        """Triple lines, score lines and stats of one chunk of queries."""
        a, b = self.window
        stats = MiningStats(queries=len(qids))
        positives: dict[str, list[str]] = {}
        for q in qids:
            pos = [d for d, g in self.qrels[q].items() if g > 0]
            if pos:
                positives[q] = pos
            else:
                stats.no_positives += 1
        run = self.retriever.search({q: self.queries[q] for q in positives}, k=b, progress=False) if positives else {}
        candidates: dict[str, list[str]] = {}
        for q in positives:
            relevant = {d for d, g in self.qrels[q].items() if g > 0}
            candidates[q] = [d for d, _ in (run.get(q) or [])[a:b] if d not in relevant]
            if self.teacher is not None and self.teacher_pool:
                candidates[q] = self._pool(q, candidates[q])

        texts: dict[str, str] = {}
        if self.text or self.teacher is not None:
            if self.store is None:
                self.store = DocStore(self.corpus)
            texts = _doc_texts(self.store, {d for q in positives for d in positives[q] + candidates[q]})
        teacher_scores: dict[str, list[float]] = {}
        if self.teacher is not None:
            todo = [q for q in positives if candidates[q]]
            lists = [(self.queries[q], [texts[d] for d in positives[q] + candidates[q]]) for q in todo]
            scored = self.teacher.score(lists, progress=False) if lists else []
            if len(scored) != len(lists) or any(len(s) != len(l[1]) for s, l in zip(scored, lists)):
                raise RuntimeError(f"the teacher {type(self.teacher).__qualname__} returned scores that do not match "
                                   "the candidate lists")
            teacher_scores = {q: [float(x) for x in s] for q, s in zip(todo, scored)}

        lines: list[str] = []
        score_lines: list[str] = []
        for q in positives:
            stats.positives += len(positives[q])
            rng = np.random.default_rng([self.seed, zlib.crc32(q.encode("utf-8"))])
            short = False
            cands = candidates[q]
            s = teacher_scores.get(q)
            for i, p in enumerate(positives[q]):
                eligible = list(range(len(cands)))
                if s is not None and self.margin is not None:
                    limit = s[i] - self.margin
                    eligible = [j for j in eligible if s[len(positives[q]) + j] <= limit]
                    stats.teacher_dropped += len(cands) - len(eligible)
                if self.sampling == "top" or len(eligible) <= self.negatives:
                    chosen = eligible[: self.negatives]
                else:
                    picks = rng.choice(len(eligible), size=self.negatives, replace=False)
                    chosen = [eligible[j] for j in sorted(picks.tolist())]
                short |= len(chosen) < self.negatives
                for j in chosen:
                    n = cands[j]
                    if self.text:
                        lines.append(f"{_clean(self.queries[q])}\t{_clean(texts[p])}\t{_clean(texts[n])}\n")
                    else:
                        lines.append(f"{q}\t{p}\t{n}\n")
                    if self.scores and s is not None:
                        score_lines.append(f"{s[i]:.9g}\t{s[len(positives[q]) + j]:.9g}\t{q}\t{p}\t{n}\n")
            stats.short += short
        stats.triples = len(lines)
        return lines, score_lines, stats

    def _pool(self, q: str, cands: list[str]) -> list[str]:
        """The candidates the teacher scores: ``teacher_pool x negatives`` of them, in rank order."""
        size = self.teacher_pool * self.negatives
        if len(cands) <= size:
            return cands
        if self.sampling == "top":
            return cands[:size]
        rng = np.random.default_rng([self.seed, zlib.crc32(q.encode("utf-8")), 1])
        return [cands[j] for j in sorted(rng.choice(len(cands), size=size, replace=False).tolist())]


# ---------------------------------------------------------------------------------------------
# The resumable driver


def mine_negatives(
    corpus: Corpus | str | Path,
    queries: QueriesLike,
    qrels: QrelsLike,
    retriever: Retriever | Callable[[], Retriever],
    *,
    window: tuple[int, int] = (10, 100),
    negatives: int = 8,
    sampling: str = "random",
    seed: int = 0,
    teacher: Reranker | str | None = None,
    margin: float | None = None,
    out: str | Path,
    scores_out: str | Path | None = None,
    text: bool = False,
    chunk_size: int = 256,
    force: bool = False,
    progress: bool = True,
    teacher_pool: int = 4,
) -> MiningStats:
    """Mine hard negatives for every judged query and write MS MARCO-style triples to ``out``.

    ``queries`` and ``qrels`` are files (BEIR or MS MARCO / TREC layouts) or mappings. For each
    query with relevant documents (grade > 0), ``retriever`` ranks the corpus; the candidates are
    ``ranked[a:b]`` for ``window=(a, b)``, less every document judged relevant. For each positive,
    ``negatives`` candidates are picked (``sampling="top"``: the best ranked; ``"random"``: drawn
    by a generator seeded with ``(seed, crc32(query_id))``, kept in rank order) and written one line
    per (positive, negative): ``query_id \\t pos_id \\t neg_id``, or ``query \\t positive \\t
    negative`` texts with ``text=True``.

    ``teacher`` (a :class:`rankwise.rerank.base.Reranker` or a spec such as ``cross-encoder:PATH``) scores
    the positives and candidates; with ``margin``, a candidate with ``teacher(neg) >
    teacher(pos) - margin`` is dropped before sampling. ``scores_out`` receives the teacher's
    scores in the Margin-MSE format, line ``i`` matching triple line ``i``.

    ``retriever`` may be a function returning one, called only once the inputs are checked (so
    bad input fails before any index is built). Resumable (see the module docstring); a previous
    unfinished run with other settings is refused unless ``force``.
    """
    window = _check_window(window)
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
        raise InputError(f"negatives must be a positive integer, got {negatives!r}", field="negatives")
    if sampling not in SAMPLINGS:
        raise InputError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}", field="sampling")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", field="seed")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}", field="chunk-size")
    if margin is not None:
        if teacher is None:
            raise InputError("a margin needs a teacher to score the candidates (--teacher)", field="margin")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise InputError(f"margin must be a finite number, got {margin!r}", field="margin")
    if scores_out is not None and teacher is None:
        raise InputError("teacher scores need a teacher (--teacher)", field="scores")
    if isinstance(teacher, str):
        from rankwise.rerank.spec import parse_spec

        teacher = str(parse_spec(teacher))  # a bad spec fails before anything is loaded
    out = Path(out)
    if scores_out is not None and Path(scores_out).resolve() == out.resolve():
        raise InputError("the scores file must not be the triples file", path=scores_out, field="scores")

    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    query_texts, queries_path = _load_queries(queries)
    judged, qrels_path = _load_qrels(qrels)
    _check_inputs(corpus, query_texts, judged, qrels_path, queries_path, progress)

    if not hasattr(retriever, "search") and callable(retriever):
        retriever = retriever()
    settings = {
        "format_version": FORMAT_VERSION,
        "window": list(window), "negatives": negatives, "sampling": sampling, "seed": seed,
        "teacher": _describe_teacher(teacher), "margin": margin, "text": text, "scores": scores_out is not None,
        "teacher_pool": teacher_pool if teacher is not None else None,
        "chunk_size": chunk_size,
        "corpus": corpus.fingerprint,
        "queries": sha256_file(queries_path) if queries_path else _digest(query_texts),
        "qrels": sha256_file(qrels_path) if qrels_path else _digest(judged),
        "retriever": _describe_retriever(retriever),
    }
    work = out.with_name(out.name + WORK_SUFFIX)
    qids = sorted(judged)
    chunks = [qids[i:i + chunk_size] for i in range(0, len(qids), chunk_size)]

    def finished(n: int) -> bool:
        return part_path(work, n).is_file() and part_path(work, n, "json").is_file() and (
            scores_out is None or part_path(work, n, "scores.tsv").is_file())

    def chunk_stats(numbers: Sequence[int]) -> MiningStats:
        total = MiningStats(chunks=len(chunks))
        for n in numbers:
            total.add(MiningStats(**json.loads(part_path(work, n, "json").read_text(encoding="utf-8"))))
        return total

    # under torchrun, rank r mines the chunks n % WORLD_SIZE == r (rankwise.retrieval.distributed)
    with ShardedJob(work, settings, len(chunks), finished=finished, key=_digest(settings), force=force,
                    what="an unfinished mining run") as sharded:
        if sharded.done_before:
            log.info("resuming %s: %d of %d chunks already mined", out, len(sharded.done_before), len(chunks))
        if isinstance(teacher, str) and sharded.todo:
            from rankwise.rerank.spec import load_reranker

            device = device_for_rank(sharded.local_rank, sharded.size)
            try:
                teacher = load_reranker(teacher, batch_size=None, device=device)
            except BaseException:
                if not sharded.done_before and sharded.size == 1:  # nothing mined yet: leave no work folder behind
                    shutil.rmtree(work, ignore_errors=True)
                raise
        job = _Job(corpus, query_texts, judged, retriever, window, negatives, sampling, seed,
                   teacher if not isinstance(teacher, str) else None, margin, text, scores_out is not None,
                   teacher_pool=teacher_pool)
        with CostBar(total=sum(len(chunks[n]) for n in sharded.mine), desc="mining negatives", unit="query",
                     warmup=1, disable=not progress or sharded.rank != 0, file=sys.stderr) as bar:
            bar.update(sum(len(chunks[n]) for n in sharded.kept))
            for n in sharded.todo:
                lines, score_lines, mined = job.mine(chunks[n])
                if scores_out is not None:
                    with atomic_open(part_path(work, n, "scores.tsv")) as fh:
                        fh.writelines(score_lines)
                write_json(part_path(work, n, "json"), mined.as_dict())
                with atomic_open(part_path(work, n)) as fh:  # written last: marks the chunk finished
                    fh.writelines(lines)
                bar.update(len(chunks[n]))
        mine_only = chunk_stats(sharded.mine)  # this rank's chunks (read before rank 0 removes the folder)

        def merge() -> MiningStats:
            concatenate([part_path(work, n) for n in range(len(chunks))], out)
            if scores_out is not None:
                concatenate([part_path(work, n, "scores.tsv") for n in range(len(chunks))], Path(scores_out))
            return chunk_stats(range(len(chunks)))

        stats = sharded.merge(merge)
    stats = stats if stats is not None else mine_only  # the other ranks report their own chunks
    stats.resumed_chunks = len(sharded.done_before)
    return stats
