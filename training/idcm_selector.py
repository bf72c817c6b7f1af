"""Train IDCM's passage selector by distillation (Hofstätter et al., 2021, "Intra-Document Cascading:
Learning to Select Passages for Neural Document Ranking", SIGIR).

IDCM (:mod:`rankwise.rerank.idcm`) scores only the ``select`` passages of a document that a cheap selector
ranks best. The paper's selector is trained by distillation from the expensive scorer: for every
candidate document of a training query,

1. the document is split into passages exactly as the reranker splits it (:mod:`rankwise.retrieval.passages`);
2. the teacher (a cross-encoder) scores every (query, passage) pair; the scores are cached in
   ``OUT/teacher/scores.jsonl`` (one line per query and document, rewritten atomically after every
   chunk of documents), so a rerun, or a run that only changes the training settings, scores nothing
   again; the folder is a :mod:`rankwise.retrieval.workdir` work folder keyed by the scorer, the passage
   settings and the corpus and queries files (other settings: refused unless ``force``; other
   candidates or more queries only add the pairs not yet cached);
3. the student bi-encoder is trained so that its similarity distribution over the document's
   passages matches the teacher's: the listwise KL of :mod:`rankwise.training.losses.idcm` (registry kind
   ``idcm-selector``, loss ``kl``), on the shared trainer flow (:mod:`rankwise.training.flow`: checkpoints,
   resume, atomic save).

Candidates come from a TREC run (the top ``depth`` of each query) or, without one, from BM25's top
``depth`` over the corpus. Documents of one passage carry no signal and are skipped; a document of
more than ``max_passages`` passages keeps a seeded sample of that many (the teacher's distribution
restricted to a subset is the softmax over that subset, so the target stays exact). The output is a
sentence-transformers folder: ``idcm:dense:OUT>>CROSS_ENCODER,select=4,passages=N``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open
from rankwise.retrieval.formats import Corpus, read_qrels, read_queries
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.passages import Splitter
from rankwise.retrieval.run import Run
from rankwise.retrieval.workdir import claim_workdir
from rankwise.training.data import file_stats
from rankwise.training.flow import CheckedRun, ModelKind, train_sentence_model
from rankwise.training.losses.registry import IDCM_SELECTOR, LossContext, check_loss, get_loss
from rankwise.training.runner import TrainResult
from rankwise.training.settings import TrainSettings

TEACHER_DIR = "teacher"
SCORES_FILE = "scores.jsonl"


class PairScorer(Protocol):
    """What the teacher must do: one score per (query, passage) pair."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]: ...


@dataclass(frozen=True)
class SelectorInput:
    """The training input: corpus, queries, and the candidates (``run``'s top ``depth``, or BM25's).

    ``qrels`` (optional) restricts the queries to those it judges (e.g. a BEIR folder's train split;
    its labels are not used); ``max_queries`` keeps the first N of them.
    """

    corpus: Path
    queries: Path
    run: Path | None = None
    qrels: Path | None = None
    depth: int = 20
    max_queries: int | None = None

    def signature(self) -> dict[str, Any]:
        """The input files' stats and the candidate settings: what a resumed run must match."""
        files = {name: file_stats(Path(p)) for name in ("corpus", "queries", "run", "qrels")
                 if (p := getattr(self, name)) is not None}
        return {"files": files, "depth": self.depth, "max_queries": self.max_queries}


@dataclass
class Example:
    """One (query, candidate document) and its passages; ``teacher`` is filled by :func:`teacher_scores`."""

    qid: str
    doc_id: str
    query: str
    passages: list[str]
    teacher: list[float] | None = None


def _line_of(path: Path, qid: str) -> int | None:
    """The first line of a run file that holds query ``qid``."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.split()[:1] == [qid]:
                return number
    return None


def candidates(data: SelectorInput, *, progress: bool = False) -> dict[str, list[str]]:
    """``{query id: candidate doc ids}``: the run's top ``depth`` or BM25's; bad input is an :class:`InputError`."""
    for name in ("corpus", "queries", "run", "qrels"):
        path = getattr(data, name)
        if path is not None and not Path(path).exists():
            raise InputError("file not found", path=path, field=name)
    if data.depth < 1:
        raise InputError(f"candidates per query must be at least 1, got {data.depth}", field="candidates")
    queries = read_queries(data.queries)
    if not queries:
        raise InputError("no queries", path=data.queries)
    wanted = list(queries)
    if data.qrels is not None:
        judged = read_qrels(data.qrels)
        wanted = [q for q in wanted if q in judged]
    if data.run is not None:
        run = Run.read(data.run)
        for qid in run:
            if qid not in queries:
                raise InputError(f"query id {qid!r} is not in {data.queries}", path=data.run,
                                 line=_line_of(Path(data.run), qid), field="qid")
        keep = set(wanted)
        lists = {qid: [d for d, _ in run[qid][: data.depth]] for qid in run if qid in keep}
    else:
        from rankwise.retrieval.cached import cached_retriever

        retriever = cached_retriever(Corpus(data.corpus), "bm25")
        run = retriever.search({q: queries[q] for q in wanted}, k=data.depth)
        lists = {qid: [d for d, _ in run[qid]] for qid in wanted if qid in run}
    if data.max_queries is not None:
        lists = dict(list(lists.items())[: data.max_queries])
    if not lists:
        raise InputError("no training query has candidates" + (f" among the queries judged in {data.qrels}"
                                                                if data.qrels is not None else ""),
                         path=data.run or data.queries)
    return lists


def build_examples(data: SelectorInput, splitter: Splitter, *, max_passages: int = 64, seed: int = 0,
                   progress: bool = False) -> tuple[list[Example], dict[str, int]]:
    """The (query, document) examples with their passages, and counts (documents skipped for one passage)."""
    if max_passages < 2:
        raise InputError(f"max_passages must be at least 2, got {max_passages}", field="max_passages")
    lists = candidates(data, progress=progress)
    queries = read_queries(data.queries)
    corpus = Corpus(data.corpus)
    try:
        docs = corpus.lookup({d for ids in lists.values() for d in ids})
    except InputError as err:
        raise InputError(f"{err.message} (a candidate of the {'run' if data.run else 'BM25 run'})",
                         path=data.run or data.corpus, field="docid") from None
    examples: list[Example] = []
    counts = {"queries": len(lists), "documents": 0, "single_passage": 0, "sampled": 0}
    for qid, ids in lists.items():
        for did in ids:
            counts["documents"] += 1
            doc = docs[did]
            passages = splitter.split(doc.text, doc.title)
            if len(passages) < 2:
                counts["single_passage"] += 1
                continue
            if len(passages) > max_passages:
                rnd = random.Random(f"{seed}:{qid}:{did}")
                passages = [passages[i] for i in sorted(rnd.sample(range(len(passages)), max_passages))]
                counts["sampled"] += 1
            examples.append(Example(qid, did, queries[qid], passages))
    if not examples:
        raise InputError(f"no candidate document is longer than one passage ({splitter.passage_tokens} words): "
                         "nothing to select from", path=data.corpus, field="passages")
    return examples, counts


def _read_cache(file: Path) -> dict[tuple[str, str], list[float]]:
    cached: dict[tuple[str, str], list[float]] = {}
    if not file.is_file():
        return cached
    with open(file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
                cached[record["qid"], record["doc_id"]] = [float(s) for s in record["scores"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InputError("not a teacher-score record (qid, doc_id, scores); pass --force to score again",
                                 path=file, line=number) from None
    return cached


def teacher_scores(examples: list[Example], scorer: PairScorer, folder: Path, settings: dict[str, Any], *,
                   force: bool = False, chunk: int = 32, progress: bool = True) -> dict[str, int]:
    """Fill ``example.teacher`` with the teacher's passage scores, cached in ``folder/scores.jsonl``.

    ``folder`` is a work folder for ``settings`` (:func:`rankwise.retrieval.workdir.claim_workdir`): cached
    scores made with other settings are refused unless ``force``. Documents already in the cache
    are not scored again; the file is rewritten atomically after every ``chunk`` documents, or an
    eighth of those cached, whichever is more (so the rewrites add up to a few times the file), and
    an interrupted run keeps what it scored. Returns ``{"cached": ..., "scored": ...}`` (documents).
    """
    from tqdm.auto import tqdm

    file = folder / SCORES_FILE
    claim_workdir(folder, settings, force=force, what="teacher passage scores",
                  has_work=lambda: file.is_file() and file.stat().st_size > 0)
    cached = _read_cache(file)
    todo = []
    for ex in examples:
        scores = cached.get((ex.qid, ex.doc_id))
        if scores is not None and len(scores) == len(ex.passages):
            ex.teacher = scores
        else:
            todo.append(ex)
    stats = {"cached": len(examples) - len(todo), "scored": len(todo)}
    with tqdm(total=sum(len(ex.passages) for ex in todo), desc="teacher passage scores", unit="passage",
              disable=not progress or not todo) as bar:
        start = 0
        while start < len(todo):
            part = todo[start:start + max(chunk, len(cached) // 8)]
            start += len(part)
            pairs = [(ex.query, p) for ex in part for p in ex.passages]
            scores = scorer.score_pairs(pairs)
            offset = 0
            for ex in part:
                ex.teacher = [float(s) for s in scores[offset:offset + len(ex.passages)]]
                offset += len(ex.passages)
                cached[ex.qid, ex.doc_id] = ex.teacher
            with atomic_open(file) as fh:
                for (qid, did), values in cached.items():
                    fh.write(json.dumps({"qid": qid, "doc_id": did, "scores": values}) + "\n")
            bar.update(len(pairs))
    return stats


def selector_rows(examples: Sequence[Example], width: int) -> Iterator[dict[str, Any]]:
    """One row per example: ``query``, ``passage_1..passage_WIDTH`` (padded with "") and ``label``, the
    teacher's scores padded with NaN (masked out by the loss)."""
    for ex in examples:
        assert ex.teacher is not None
        row: dict[str, Any] = {"query": ex.query}
        for j in range(width):
            row[f"passage_{j + 1}"] = ex.passages[j] if j < len(ex.passages) else ""
        row["label"] = ex.teacher + [math.nan] * (width - len(ex.teacher))
        yield row


def train_idcm_selector(
    data: SelectorInput,
    out: str | Path,
    *,
    scorer: str | PairScorer,
    model: str = DEFAULT_ENCODER,
    passages: int = 128,
    stride: int | None = None,
    max_passages: int = 64,
    temperature: float = 1.0,
    scale: float | None = None,
    loss: str = "kl",
    settings: TrainSettings | None = None,
    teacher_batch_size: int = 32,
    teacher_max_length: int | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Distill ``scorer``'s passage scores into the bi-encoder ``model``; the selector is saved in ``out``.

    ``scorer``: a cross-encoder (name, path or ``cross-encoder:PATH``) or any object with
    ``score_pairs``. ``passages`` / ``stride``: the split the IDCM reranker will use. ``scale``:
    the student's similarity multiplier (default 20 for cosine models, 1 for dot product);
    ``temperature``: of both softmaxes. See the module docstring for the steps.
    """
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.training_args import BatchSamplers

    from rankwise.training.bi_encoder import _load
    from rankwise.training.columns import to_dataset

    settings = settings or TrainSettings()
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature}", field="temperature")
    entry = get_loss(IDCM_SELECTOR, loss)
    check_loss(entry, teacher=True, curriculum=settings.curriculum)
    splitter = Splitter(passages, stride)
    out = Path(out)
    examples, counts = build_examples(data, splitter, max_passages=max_passages, seed=settings.seed,
                                      progress=progress)
    scorer_name = scorer if isinstance(scorer, str) else type(scorer).__name__
    # what the cached scores depend on: the texts and the split, not which queries or candidates are used
    # (a run with more queries or another depth scores only the (query, document) pairs not yet cached)
    texts = {name: file_stats(Path(getattr(data, name))) for name in ("corpus", "queries")}
    teacher_settings = {"scorer": scorer_name, "passages": passages, "stride": stride, "max_passages": max_passages,
                        "max_length": teacher_max_length, "seed": settings.seed, "texts": texts}
    if isinstance(scorer, str):
        from rankwise.rerank.cross_encoder import CrossEncoderReranker

        scorer = CrossEncoderReranker(scorer.removeprefix("cross-encoder:"), batch_size=teacher_batch_size,
                                      max_length=teacher_max_length)
    cache = teacher_scores(examples, scorer, out / TEACHER_DIR, teacher_settings, force=force, progress=progress)

    st = _load(SentenceTransformer, model)
    if settings.max_length:
        st.max_seq_length = settings.max_length
    cosine = (st.similarity_fn_name or "cosine") == "cosine"
    scale = (20.0 if cosine else 1.0) if scale is None else scale
    width = max(len(ex.passages) for ex in examples)
    summary = {**counts, "examples": len(examples), "max_passages_per_example": width,
               "mean_passages": round(sum(len(ex.passages) for ex in examples) / len(examples), 2),
               "teacher_cached": cache["cached"], "teacher_scored": cache["scored"]}
    description = {"scorer": scorer_name, "passages": passages, "stride": stride, "max_passages": max_passages,
                   "temperature": temperature, "scale": scale}
    kind = ModelKind(IDCM_SELECTOR, SentenceTransformerTrainer, Arguments, rows=lambda *_: iter(()),
                     argument_options=lambda _: {"batch_sampler": BatchSamplers.BATCH_SAMPLER},
                     description=description)
    context = LossContext(st, scale=scale, cosine=cosine, temperature=temperature)

    def dataset_and_loss(out_dir: Path, identity: str) -> tuple[Any, Any]:
        dataset = to_dataset(lambda: selector_rows(examples, width), out_dir / "checkpoints" / "dataset", identity)
        return dataset, entry.build(context)

    return train_sentence_model(kind, CheckedRun(entry, summary, 0), st, model, data, out, settings=settings,
                                pg_rank=None, context=context, force=force, progress=progress,
                                callbacks=callbacks, save_model=lambda path: st.save(str(path)),
                                custom=dataset_and_loss)
