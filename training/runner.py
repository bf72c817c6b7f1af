"""One training run: arguments, checkpoints and resume, the final model saved atomically, the log.

Every trainer (bi-encoder, cross-encoder) builds a sentence-transformers trainer (the Hugging
Face ``Trainer`` underneath: DDP under ``torchrun``, gradient accumulation, checkpoints) and
hands it to :func:`run_training`, which adds what a long job needs:

* checkpoints in ``OUT/checkpoints`` every ``save_steps``, with ``run.json`` recording the hash
  of the settings and inputs; a rerun with the same hash resumes from the last complete checkpoint
  (optimizer, scheduler, RNG states and data position restored), a different one is refused
  unless ``force``. A checkpoint counts only when complete: its ``trainer_state.json`` (which the
  trainer writes last) is there and every file in it reads back whole; one torn by a kill mid-write
  is removed and the run resumes from the one before;
* a finished run (``rankwise_training.json`` records its hash) run again is a no-op that says so;
* the final model written to a temporary folder and moved into ``OUT`` file by file, with
  ``rankwise_training.json`` (settings, inputs, timing, samples/s) written last;
* ``OUT/training_log.jsonl``: the trainer's log history (loss, learning rate, curriculum).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import atomic_open, plain_permissions, write_json
from rankwise.retrieval.locks import folder_lock
from rankwise.retrieval.workdir import claim_workdir
from rankwise.training.settings import TrainSettings

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
RESULT_FILE = "rankwise_training.json"
LOG_FILE = "training_log.jsonl"


@dataclass
class TrainResult:
    """What a finished run reports."""

    out: Path
    steps: int
    samples: int
    seconds: float
    resumed_from: str | None
    log: list[dict[str, Any]] = field(default_factory=list)
    already_finished: bool = False  # the run was finished before: nothing was trained this time

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def final_loss(self) -> float | None:
        losses = [e["loss"] for e in self.log if "loss" in e]
        return losses[-1] if losses else None


def require_training() -> None:
    """Training needs the ``train`` extra: accelerate (the Hugging Face ``Trainer``) and datasets (its inputs).

    Called where the trainers' modules import sentence-transformers' and transformers' trainers,
    so that a missing extra is named before any of them is imported.
    """
    for module in ("accelerate", "datasets"):
        requires(module, "train", "Training")


def training_arguments(cls: type, settings: TrainSettings, out: Path, *, progress: bool = True,
                       **overrides: Any) -> Any:
    """``cls`` (a sentence-transformers TrainingArguments class) filled from ``settings``."""
    import torch

    kwargs: dict[str, Any] = dict(
        output_dir=str(out / "checkpoints"), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.lr,
        warmup_steps=settings.warmup_ratio, weight_decay=settings.weight_decay, seed=settings.seed,
        data_seed=settings.seed, save_strategy="steps", save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit, logging_steps=settings.logging_steps,
        logging_first_step=True, report_to="none", disable_tqdm=not progress,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        fp16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(), dataloader_drop_last=False,
        **dataloader_options(settings.dataloader_workers),
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() else None,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def dataloader_options(workers: int) -> dict[str, Any]:
    """TrainingArguments for the data path: ``workers`` collating processes, kept alive across epochs and
    2 batches ahead each; pinned host memory (copied ``non_blocking``) when CUDA is there."""
    import torch

    return {"dataloader_num_workers": workers, "dataloader_pin_memory": torch.cuda.is_available(),
            "dataloader_persistent_workers": workers > 0, "dataloader_prefetch_factor": 2 if workers > 0 else None}


def with_loss_logs(trainer_class: type) -> type:
    """``trainer_class`` whose log entries also hold its loss's statistics (``loss.pop_logs()``, e.g. PG-Rank's
    mean reward and estimator variance) averaged since the previous entry."""
    if trainer_class not in _LOGGED:
        def log(self: Any, logs: dict[str, float], start_time: float | None = None) -> None:
            pop = getattr(getattr(self, "loss", None), "pop_logs", None)
            if "loss" in logs and pop is not None:
                logs = {**logs, **pop()}
            super(_LOGGED[trainer_class], self).log(logs, start_time)

        _LOGGED[trainer_class] = type(trainer_class.__name__, (trainer_class,), {"log": log})
    return _LOGGED[trainer_class]


_LOGGED: dict[type, type] = {}


def run_identity(settings: TrainSettings, description: dict[str, Any], signature: dict[str, Any]) -> str:
    """The hash a resumed run must match: settings, the run's description (not its input summary) and input files."""
    if settings.curriculum_run:  # an input file too: a changed run changes the sample weights
        path = Path(settings.curriculum_run)
        stat = path.stat() if path.exists() else None
        signature = {**signature, "curriculum_run": (str(path.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns)}
    return settings.identity(**{k: v for k, v in description.items() if k not in ("settings", "input")},
                             signature=signature)


def prepare_out(out: Path, identity: str, description: dict[str, Any], *, force: bool = False) -> None:
    """Create ``OUT/checkpoints`` with ``run.json``; refuse checkpoints of a different run unless ``force``
    (a different run that never reached a checkpoint has nothing to lose and is started over):
    :func:`rankwise.retrieval.workdir.claim_workdir`'s rule."""
    claim_workdir(out / "checkpoints", description, key=identity, force=force, file=RUN_FILE,
                  what="checkpoints of a training run", has_work=lambda: last_checkpoint(out) is not None,
                  write=_is_main_process())


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TRAINER_STATE = "trainer_state.json"


def _file_problem(file: Path) -> str | None:
    """Why a checkpoint file does not read back whole (cheap checks: no tensor is loaded), or None."""
    try:
        if file.suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
        elif file.suffix == ".safetensors":
            with open(file, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if file.stat().st_size != 8 + size + end:
                return "truncated"
        elif file.suffix in (".pt", ".pth", ".bin"):  # torch.save's zip archives: the directory is at the end
            with zipfile.ZipFile(file) as archive:
                archive.infolist()
    except (OSError, ValueError, KeyError, TypeError, struct.error, zipfile.BadZipFile, UnicodeDecodeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (no trainer state, a torn file), or None when it is."""
    if not (folder / _TRAINER_STATE).is_file():
        return f"no {_TRAINER_STATE}"
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            problem = _file_problem(file)
            if problem:
                return f"{file.relative_to(folder)}: {problem}"
    return None


def last_checkpoint(out: Path, *, remove_torn: bool = False) -> str | None:
    """The newest complete checkpoint in ``OUT/checkpoints`` (None: none). Newer incomplete ones (a kill
    while a checkpoint was written) are skipped, and with ``remove_torn`` deleted, so that the resumed
    run writes that step again from scratch."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return None
    numbered = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                       if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    for _, path in numbered:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if remove_torn:
            log.warning("%s is incomplete (%s): removed; resuming from the checkpoint before it", path, problem)
            shutil.rmtree(path)
    return None


def finished_run(out: Path, identity: str) -> TrainResult | None:
    """The result of the run ``identity`` when ``out`` already holds it finished (its model saved), else None."""
    try:
        record = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("identity") != identity:
        return None
    entries = []
    try:
        entries = [json.loads(line) for line in (out / LOG_FILE).read_text(encoding="utf-8").splitlines() if line]
    except (OSError, ValueError):
        pass
    log.info("%s already holds this finished training run (%s steps); nothing to train (a new --out, or other "
             "settings, trains again)", out, record.get("steps"))
    return TrainResult(out=out, steps=int(record.get("steps", 0)), samples=0, seconds=0.0, resumed_from=None,
                       log=entries, already_finished=True)


def run_training(trainer: Any, out: Path, *, save_model: Callable[[Path], None], description: dict[str, Any],
                 identity: str | None = None) -> TrainResult:
    """Train (resuming from the last complete checkpoint in ``OUT/checkpoints``), then save the model into ``OUT``.

    The main process holds ``OUT``'s lock (:mod:`rankwise.retrieval.locks`) meanwhile: a second run
    into the same folder is refused with one line.
    """
    with folder_lock(out) if trainer.is_world_process_zero() else contextlib.nullcontext():
        return _run_training(trainer, out, save_model=save_model, description=description, identity=identity)


def _run_training(trainer: Any, out: Path, *, save_model: Callable[[Path], None], description: dict[str, Any],
                  identity: str | None) -> TrainResult:
    resume = last_checkpoint(out, remove_torn=trainer.is_world_process_zero())
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    state = trainer.state
    batch = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps * trainer.args.world_size
    first_step = int(Path(resume).name.split("-")[-1]) if resume else 0
    samples = (state.global_step - first_step) * batch
    result = TrainResult(out=out, steps=state.global_step, samples=samples, seconds=seconds, resumed_from=resume,
                         log=list(state.log_history))
    if trainer.is_world_process_zero():
        (out / RESULT_FILE).unlink(missing_ok=True)  # the model files change: no longer a finished run
        _save_atomically(out, save_model)
        with atomic_open(out / LOG_FILE) as f:
            for entry in state.log_history:
                f.write(json.dumps(entry) + "\n")
        write_json(out / RESULT_FILE, {  # written last: marks the run finished
            **description, "identity": identity, "steps": state.global_step, "train_seconds": round(seconds, 2),
            "samples_this_session": samples, "samples_per_second": round(result.samples_per_second, 3),
            "resumed_from": resume, "final_loss": result.final_loss,
            "train_runtime_reported": getattr(output, "metrics", {}).get("train_runtime"),
        })
    return result


def _save_atomically(out: Path, save_model: Callable[[Path], None]) -> None:
    """Save into a temporary folder beside the final files, then move each file into ``out``."""
    tmp = out / ".model-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(tmp)
    plain_permissions(tmp)  # safetensors writes 0600: the model gets the umask's permissions
    for path in sorted(tmp.rglob("*")):
        target = out / path.relative_to(tmp)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(tmp)
