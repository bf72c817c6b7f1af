"""One trainer flow for sentence-transformers models: bi-encoders and cross-encoders.

:func:`train_sentence_model` is what both trainers run: check the loss against the registry
(:mod:`rankwise.training.losses.registry`) and the input (streamed, before anything loads), describe and
identify the run, refuse or resume its folder (:mod:`rankwise.training.runner`), build the columns, the loss
(plus a curriculum where asked) and the sentence-transformers trainer, then train and save. The two
kinds differ only in what :class:`ModelKind` holds: the trainer and argument classes, how rows are
made, and what the description records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.training.columns import to_dataset
from rankwise.training.curriculum import difficulty_for
from rankwise.training.data import TrainingInput
from rankwise.training.losses.registry import LossContext, LossEntry, check_loss, get_loss
from rankwise.training.memory import BatchPlan, check_training_memory, model_shape
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
    plan: BatchPlan | None = None


def check_run(kind: ModelKind, data: TrainingInput, loss: str, negatives: int | None,
              settings: TrainSettings, model: str | None = None) -> CheckedRun:
    """Check ``loss`` against the registry and read the whole input once, before any model loads.

    With ``model``, a step's peak memory is checked (:func:`rankwise.training.memory.check_training_memory`)
    before the input is read (with ``negatives``, or one, per sample) and again with the negatives it has.
    """
    entry = get_loss(kind.kind, loss)
    check_loss(entry, teacher=data.teacher is not None, curriculum=settings.curriculum)
    shape = model_shape(model, kind.kind) if model is not None else None
    if shape is not None:
        check_training_memory(model, kind.kind, loss, negatives or 1, settings, shape)
    summary = data.check()
    k = data.negatives_to_use(summary, negatives)
    if entry.needs_negatives and k < 1:
        raise InputError(kind.no_negatives_message(loss), path=data.triples)
    plan = check_training_memory(model, kind.kind, loss, k, settings, shape) if shape is not None else None
    return CheckedRun(entry, summary, k, plan)


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
    ``checked.plan`` (:func:`rankwise.training.memory.check_training_memory`) splits each step into
    micro-batches whose gradients accumulate.
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
    memory: dict[str, Any] = {"activation_checkpointing": True} if settings.gradient_checkpointing else {}
    plan = checked.plan
    if plan is not None:
        memory.update(per_device_train_batch_size=plan.micro,
                      gradient_accumulation_steps=settings.gradient_accumulation_steps * plan.accumulation)
        logging.getLogger("rankwise.training").info(plan.describe())
    args = training_arguments(kind.arguments_class, settings, out, progress=progress,
                              **kind.argument_options(entry), **memory)
    extra_callbacks = [*callbacks, cost_callback(kind.kind)]
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


def cost_callback(what: str) -> Any:
    """A trainer callback that logs the cost line (:class:`rankwise.retrieval.progress.CostEstimate`) after the
    first steps: steps to go, seconds per step, projected time (the main process only)."""
    from transformers import TrainerCallback

    from rankwise.retrieval.progress import CostEstimate

    class _Cost(TrainerCallback):
        cost: CostEstimate | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.cost = CostEstimate(f"training {what} ({batch} samples per step)", state.max_steps - state.global_step,
                                     "step", warmup=1, batch_word="step",
                                     log=state.is_world_process_zero)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.cost is not None:
                self.cost.update(1)

    return _Cost()
