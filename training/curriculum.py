"""Per-sample difficulty heuristics for curriculum training (MacAvaney et al., SIGIR 2020).

"Training Curricula for Open Domain Answer Re-Ranking" weights each training sample by how
difficult a cheap heuristic judges it, down-weighting hard samples early and annealing to uniform
weights (the weighting itself is :class:`rankwise.training.losses.curriculum.CurriculumLoss`). A difficulty
is in [0, 1]: 0 easy, 1 hard. Two heuristics:

* ``bm25``: the paper's reciprocal-rank heuristic. A positive the BM25 ranker puts at rank ``r``
  is easy when ``r`` is small (``d = 1 - 1/r``); a negative is hard when BM25 ranks it high
  (``d = 1/r``); a pair (positive, negative) averages the two. Documents BM25 does not retrieve
  in its top ``depth`` count as rank ``depth + 1``. Needs document ids (id triples or mined ones).
  The ranks come from the cached BM25 index of the corpus, or from a BM25 run file of the training
  queries (``curriculum_run``: e.g. MS MARCO's official BM25 top-1000, or a run made elsewhere).
* ``teacher``: a teacher's scores (the Margin-MSE file): a pair is hard when the teacher's margin
  ``s(pos) - s(neg)`` is small, ``d = sigmoid(-(margin) / temperature)``; a single document is hard
  when the teacher disagrees with its label (``sigmoid(-s)`` for a positive, ``sigmoid(s)`` for a negative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.training.data import TrainingSample


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class Difficulty:
    """``pair(sample, j)``: difficulty of (positive, negative ``j``); ``point(sample, j)``: of one document
    (``j = -1`` the positive, else negative ``j``)."""

    def pair(self, sample: TrainingSample, j: int) -> float:
        return 0.5 * (self.point(sample, -1) + self.point(sample, j))

    def point(self, sample: TrainingSample, j: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class TeacherDifficulty(Difficulty):
    """Difficulty from the teacher's scores carried by each sample."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def _scores(self, sample: TrainingSample) -> tuple[float, ...]:
        if sample.teacher is None:
            raise InputError("the teacher curriculum needs teacher scores (--teacher-scores)",
                             path=sample.source[0], line=sample.source[1])
        return sample.teacher

    def pair(self, sample: TrainingSample, j: int) -> float:
        s = self._scores(sample)
        return _sigmoid(-(s[0] - s[j + 1]) / self.temperature)

    def point(self, sample: TrainingSample, j: int) -> float:
        s = self._scores(sample)
        return _sigmoid(-s[0] / self.temperature) if j < 0 else _sigmoid(s[j + 1] / self.temperature)


class BM25Difficulty(Difficulty):
    """Reciprocal BM25 rank difficulty; ``search(query_text) -> {doc_id: rank}`` (1-based), cached per query."""

    def __init__(self, search: Callable[[str], dict[str, int]], depth: int = 1000) -> None:
        self.search = search
        self.depth = depth
        self._ranks: dict[str, dict[str, int]] = {}

    def _query_ranks(self, sample: TrainingSample) -> dict[str, int]:
        if sample.query not in self._ranks:
            self._ranks[sample.query] = self.search(sample.query)
        return self._ranks[sample.query]

    def _rank(self, sample: TrainingSample, doc_id: str | None) -> int:
        if doc_id is None:
            raise InputError("the bm25 curriculum needs document ids (id triples with --queries and --corpus)",
                             path=sample.source[0], line=sample.source[1])
        return self._query_ranks(sample).get(doc_id, self.depth + 1)

    def point(self, sample: TrainingSample, j: int) -> float:
        if j < 0:
            return 1.0 - 1.0 / self._rank(sample, sample.positive_id)
        ids = sample.negative_ids or ()
        return 1.0 / self._rank(sample, ids[j] if j < len(ids) else None)


class RunDifficulty(BM25Difficulty):
    """Reciprocal-rank difficulty read from a ranking already made (a TREC run keyed by query id)."""

    def __init__(self, run: Any, path: str) -> None:
        super().__init__(lambda _query: {}, depth=max(len(docs) for docs in run.values()))
        self._ranks = {q: {doc: rank for rank, (doc, _) in enumerate(docs, start=1)} for q, docs in run.items()}
        self.path = path

    def _query_ranks(self, sample: TrainingSample) -> dict[str, int]:
        if sample.query_id is None:
            raise InputError("a curriculum run is keyed by query id: train on id triples or a BEIR folder",
                             path=sample.source[0], line=sample.source[1], field="query_id")
        if sample.query_id not in self._ranks:
            raise InputError(f"query {sample.query_id!r} is not in the curriculum run {self.path}",
                             path=sample.source[0], line=sample.source[1], field="query_id")
        return self._ranks[sample.query_id]


def bm25_difficulty(corpus: Any, *, depth: int = 1000, progress: bool = False) -> BM25Difficulty:
    """A :class:`BM25Difficulty` over the cached BM25 index of ``corpus`` (a :class:`rankwise.retrieval.formats.Corpus`)."""
    from rankwise.retrieval.bm25 import BM25Retriever
    from rankwise.retrieval.cached import bm25_index

    retriever = BM25Retriever(bm25_index(corpus, progress=progress))

    def search(query: str) -> dict[str, int]:
        hits = retriever.search({"q": query}, k=depth, progress=False).get("q", [])
        return {doc: rank for rank, (doc, _) in enumerate(hits, start=1)}

    return BM25Difficulty(search, depth)


def difficulty_for(settings: Any, data: Any) -> Difficulty | None:
    """The heuristic ``settings.curriculum`` names for ``data`` (a :class:`rankwise.training.data.TrainingInput`); None when off."""
    if settings.curriculum == "none":
        return None
    if getattr(settings, "curriculum_run", None):
        if settings.curriculum != "bm25":
            raise InputError("a curriculum run gives BM25 ranks: use it with --curriculum bm25", field="curriculum_run")
        from rankwise.retrieval.run import Run

        return RunDifficulty(Run.read(settings.curriculum_run), str(settings.curriculum_run))
    if settings.curriculum == "teacher":
        if data.teacher is None:
            raise InputError("the teacher curriculum needs teacher scores (--teacher-scores)", field="curriculum")
        return TeacherDifficulty()
    from pathlib import Path

    from rankwise.retrieval.formats import Corpus

    if data.corpus is None and not Path(data.triples).is_dir():
        raise InputError("the bm25 curriculum needs the corpus (--corpus)", field="curriculum")
    return bm25_difficulty(Corpus(data.corpus if data.corpus is not None else data.triples))
