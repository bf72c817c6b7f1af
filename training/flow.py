"""One trainer flow for sentence-transformers models: bi-encoders and cross-encoders.

:func:`train_sentence_model` is what both trainers run: check the loss against the registry
(:mod:`rankwise.training.losses.registry`) and the input (streamed, before anything loads), describe and
identify the run, refuse or resume its folder (:mod:`rankwise.training.runner`), build the columns, the loss
(plus a curriculum where asked) and the sentence-transformers trainer, then train and save. The two
kinds differ only in what :class:`ModelKind` holds: the trainer and argument classes, how rows are
made, and what the description records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.training.columns import to_dataset
from rankwise.training.curriculum import difficulty_for
from rankwise.training.data import TrainingInput
from rankwise.training.losses.registry import LossContext, LossEntry, check_loss, get_loss
from rankwise.training.runner import TrainResult, finished_run, prepare_out, run_identity, run_training, training_arguments, with_loss_logs
from rankwise.training.settings import PGRankSettings, TrainSettings


@dataclass
class ModelKind:
    """What one kind of model brings to the flow."""

    kind: str  # "bi-encoder" | "cross-encoder": the registry's kind and the description's
    trainer_class: type
    arguments_class: type
    rows: Callable[[Any, str, int, Any], Any]  # (samples, loss, negatives, difficulty) -> row dicts
    no_negatives_message: Callable[[str], str] = lambda loss: f"{loss} needs hard negatives: triples or n-tuples, not pairs"
    argument_options: Callable[[LossEntry], dict[str, Any]] = lambda entry: {}
    description: dict[str, Any] = field(default_factory=dict)  # recorded after the common fields


@dataclass
class CheckedRun:
    """A run whose loss and input have been checked: the registry entry, the input summary, negatives used."""

    entry: LossEntry
    summary: dict[str, Any]
    negatives: int


def check_run(kind: ModelKind, data: TrainingInput, loss: str, negatives: int | None,
              settings: TrainSettings) -> CheckedRun:
    """Check ``loss`` against the registry and read the whole input once, before any model loads."""
    entry = get_loss(kind.kind, loss)
    check_loss(entry, teacher=data.teacher is not None, curriculum=settings.curriculum)
    summary = data.check()
    k = data.negatives_to_use(summary, negatives)
    if entry.needs_negatives and k < 1:
        raise InputError(kind.no_negatives_message(loss), path=data.triples)
    return CheckedRun(entry, summary, k)


def train_sentence_model(
    kind: ModelKind,
    checked: CheckedRun,
    model: Any,
    model_name: str,
    data: TrainingInput,
    out: str | Path,
    *,
    settings: TrainSettings,
    pg_rank: PGRankSettings | None,
    context: LossContext,
    force: bool,
    progress: bool,
    callbacks: Sequence[Any],
    save_model: Callable[[Path], None],
    custom: Callable[[Path, str], tuple[Any, Any]] | None = None,
) -> TrainResult:
    """Train ``model`` (loaded after :func:`check_run`) with the checked loss; the model is saved in ``out``.

    ``custom(out, identity)`` returns ``(dataset, loss module)`` for a loss that builds its own
    (ADORE's fixed index); otherwise the rows come from ``kind.rows`` and the loss from the registry.
    """
    entry, summary, k, loss = checked.entry, checked.summary, checked.negatives, checked.entry.name
    out = Path(out)
    description = {"kind": kind.kind, "model": model_name, "loss": loss, "negatives": k, **kind.description,
                   "settings": settings.to_dict(), "data": {k_: str(v) for k_, v in vars(data).items()},
                   "input": summary}
    pg_rank = pg_rank or PGRankSettings()
    if loss == "pg-rank":
        description["pg_rank"] = vars(pg_rank)
    identity = run_identity(settings, description, data.signature())
    finished = finished_run(out, identity)
    if finished is not None:
        return finished
    prepare_out(out, identity, description, force=force)
    args = training_arguments(kind.arguments_class, settings, out, progress=progress, **kind.argument_options(entry))
    extra_callbacks = list(callbacks)
    with args.main_process_first():
        if custom is not None:
            dataset, loss_fn = custom(out, identity)
        else:
            difficulty = difficulty_for(settings, data)
            dataset = to_dataset(lambda: kind.rows(data.samples(), loss, k, difficulty),
                                 out / "checkpoints" / "dataset", identity)
            loss_fn = entry.build(LossContext(model, scale=context.scale, cosine=context.cosine, pg_rank=pg_rank,
                                              teacher_labels=context.teacher_labels))
            if difficulty is not None:
                from rankwise.training.losses.curriculum import with_curriculum

                loss_fn = with_curriculum(loss_fn, settings.curriculum_fraction, extra_callbacks)
    trainer = with_loss_logs(kind.trainer_class)(model=model, args=args, train_dataset=dataset, loss=loss_fn,
                                                 callbacks=extra_callbacks)
    return run_training(trainer, out, save_model=save_model, description=description,
                        identity=identity)
