"""Training samples -> the dataset columns each sentence-transformers loss reads.

sentence-transformers losses take the dataset's text columns in order (query, then documents) and
one ``label`` column. These builders turn :class:`rankwise.training.data.TrainingSample` streams into those
rows; :func:`to_dataset` writes them to an on-disk Arrow dataset (``datasets.Dataset.from_generator``,
memory-mapped), so even the 40M-line MS MARCO triples are never held in memory.

With a curriculum (:mod:`rankwise.training.curriculum`), each row's difficulty is appended as the last
value of its ``label`` (read back by :class:`rankwise.training.losses.curriculum.CurriculumLoss`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.training.curriculum import Difficulty
from rankwise.training.data import TrainingSample

Row = dict[str, Any]


def _negatives(sample: TrainingSample, k: int) -> tuple[str, ...]:
    if len(sample.negatives) < k:
        raise InputError(f"{len(sample.negatives)} negatives where {k} are needed (--negatives sets how many "
                         "are used)", path=sample.source[0], line=sample.source[1], field="negatives")
    return sample.negatives[:k]


def _teacher(sample: TrainingSample, k: int) -> list[float]:
    if sample.teacher is None:
        raise InputError("this loss needs teacher scores (--teacher-scores)", path=sample.source[0],
                         line=sample.source[1], field="teacher")
    return list(sample.teacher[:k + 1])


def _label(values: list[float], difficulty: float | None) -> Any:
    values = values + ([difficulty] if difficulty is not None else [])
    return values[0] if len(values) == 1 else values


def _document_columns(sample: TrainingSample, k: int) -> Row:
    row: Row = {"query": sample.query, "positive": sample.positive}
    for j, neg in enumerate(_negatives(sample, k)):
        row[f"negative_{j + 1}"] = neg
    return row


def bi_encoder_rows(samples: Iterable[TrainingSample], loss: str, k: int,
                    difficulty: Difficulty | None = None) -> Iterator[Row]:
    """Rows for a bi-encoder loss: (query, positive, negative_1..k) and, for distillation, a label.

    ``contrastive`` / ``star``: no label. ``margin-mse``: the teacher's margins ``s(pos) - s(neg_j)``
    (+ the pair difficulty with a curriculum, averaged over the negatives). ``kl``: the teacher's
    scores of (positive, negatives).
    """
    for sample in samples:
        row = _document_columns(sample, k)
        if loss == "margin-mse":
            s = _teacher(sample, k)
            d = None if difficulty is None else sum(difficulty.pair(sample, j) for j in range(k)) / k
            row["label"] = _label([s[0] - s[j + 1] for j in range(k)], d)
        elif loss == "kl":
            row["label"] = _teacher(sample, k)
        yield row


def cross_encoder_rows(samples: Iterable[TrainingSample], loss: str, k: int,
                       difficulty: Difficulty | None = None) -> Iterator[Row]:
    """Rows for a cross-encoder loss.

    ``bce``: one (query, document, 0/1) row per document of the sample (+ the document's
    difficulty). ``lce``: (query, positive, negative_1..k [, the mean pair difficulty]). ``margin-mse``: (query, positive,
    negative_1..k, teacher margins [+ difficulty]).
    ``listnet`` / ``plistmle``: (query, [positive, negatives], labels), the labels being the
    teacher's scores when the sample has them, else 1 for the positive and 0 for the negatives.
    """
    for sample in samples:
        negatives = _negatives(sample, k)
        if loss == "bce":
            yield {"query": sample.query, "document": sample.positive,
                   "label": _label([1.0], None if difficulty is None else difficulty.point(sample, -1))}
            for j, neg in enumerate(negatives):
                yield {"query": sample.query, "document": neg,
                       "label": _label([0.0], None if difficulty is None else difficulty.point(sample, j))}
        elif loss == "lce":
            row = _document_columns(sample, k)
            if difficulty is not None:
                row["label"] = sum(difficulty.pair(sample, j) for j in range(k)) / k
            yield row
        elif loss == "margin-mse":
            row = _document_columns(sample, k)
            s = _teacher(sample, k)
            d = None if difficulty is None else sum(difficulty.pair(sample, j) for j in range(k)) / k
            row["label"] = _label([s[0] - s[j + 1] for j in range(k)], d)
            yield row
        else:
            labels = list(sample.teacher[:k + 1]) if sample.teacher is not None else [1.0] + [0.0] * k
            yield {"query": sample.query, "docs": [sample.positive, *negatives], "labels": labels}


def to_dataset(rows: Callable[[], Iterator[Row]], cache_dir: Path, fingerprint: str) -> Any:
    """An on-disk ``datasets.Dataset`` of ``rows()`` (written in batches, memory-mapped), in ``cache_dir``.

    ``fingerprint`` names the build (the hash of the run's settings and input files): a rerun with
    the same one reuses the Arrow files, a changed input builds anew.
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.Dataset.from_generator(_generate, gen_kwargs={"rows": rows, "identity": fingerprint}, cache_dir=str(cache_dir),
                                                fingerprint=fingerprint)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, InputError):
            raise cause from None
        raise


def _generate(rows: Callable[[], Iterator[Row]], identity: str) -> Iterator[Row]:
    yield from rows()
