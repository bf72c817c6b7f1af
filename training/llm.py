"""Training the LLM rerankers (listwise FIRST, groupwise): the model, LoRA, the trainer, the saved folder.

Shared by :mod:`rankwise.training.listwise` and :mod:`rankwise.training.groupwise`:

* the causal LM is loaded through :class:`rankwise.rerank.llm.CausalLM` (the same loader, tokenizer and chat
  template the rerankers use; GGUF files are dequantized to float), in float32 and train mode;
* LoRA adapters through peft (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language
  Models"; :class:`LoRASettings`) on every linear layer, or full fine-tuning;
* :class:`LLMTrainer`: a Hugging Face ``Trainer`` whose ``compute_loss`` hands a batch of
  candidate lists to the reranker's objective, their prompts tokenized beforehand in the
  DataLoader's workers (:class:`PreparedRows`, the objective's ``prepare``); checkpoints, resume, the run identity and the
  atomic save are :mod:`rankwise.training.runner`'s, the objective's statistics go into the training log;
* the saved model is a plain Hugging Face folder (LoRA merged into the weights) with the
  tokenizer, so ``listwise:OUT`` / ``groupwise:OUT`` and ``rankwise beir --reranker`` load it as
  they load any causal LM.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rankwise.training.runner import require_training

require_training()  # before transformers' Trainer is imported

from transformers import Trainer, TrainingArguments  # noqa: E402

from rankwise.rerank.llm import CausalLM  # noqa: E402
from rankwise.retrieval.errors import InputError  # noqa: E402
from rankwise.retrieval.extras import requires  # noqa: E402
from rankwise.training.candidates import CandidateSource, candidate_rows, source_description, summarize  # noqa: E402
from rankwise.training.columns import to_dataset  # noqa: E402
from rankwise.training.runner import (TrainResult, finished_run, prepare_out, run_identity,  # noqa: E402
                                      run_training, training_arguments, with_loss_logs)
from rankwise.training.settings import TrainSettings  # noqa: E402


@dataclass(frozen=True)
class LoRASettings:
    """LoRA adapters (``enabled``) of rank ``r`` and scaling ``alpha`` (default ``2 r``) on ``target_modules``."""

    enabled: bool = True
    r: int = 16
    alpha: int | None = None
    dropout: float = 0.05
    target_modules: str = "all-linear"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise InputError(f"LoRA rank must be at least 1, got {self.r}", field="lora_r")
        if not 0 <= self.dropout < 1:
            raise InputError(f"LoRA dropout must be in [0, 1), got {self.dropout}", field="lora_dropout")


def load_trainable(model: str) -> CausalLM:
    """``model`` loaded as the rerankers load it, in float32 on the CPU (the Trainer places it) and train mode."""
    lm = CausalLM(model, device="cpu")
    if getattr(lm.model, "hf_quantizer", None) is not None and str(lm.model.hf_quantizer.quantization_config
                                                                     .quant_method).lower().endswith("gguf"):
        # a GGUF file is dequantized to float32 on load: plain weights, trained and saved as such
        lm.model.hf_quantizer = None
        lm.model.is_quantized = False
        vars(lm.model.config).pop("quantization_config", None)
    lm.model.float().train()
    return lm


def with_lora(model: Any, lora: LoRASettings) -> Any:
    """``model`` with LoRA adapters (peft), or ``model`` itself for full fine-tuning."""
    if not lora.enabled:
        return model
    requires("peft", "llm", "LoRA training")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha or 2 * lora.r, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_reranker(model: Any, tokenizer: Any, path: Path) -> None:
    """The trained LM as a plain Hugging Face folder: LoRA merged into the weights, with the tokenizer."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


class PreparedRows:
    """The collate function: the batch's rows and ``objective.prepare(row)`` of each (its prompts tokenized).

    The Trainer's DataLoader runs it in its worker processes (``TrainSettings.workers``), so the
    tokenizer works on the next batches while the model runs this one; the step only pads and runs
    the model. ``prepare`` is deterministic (seeded by the run's seed and the query), so the batches
    are the same with any number of workers.
    """

    def __init__(self, objective: Any) -> None:
        self.objective = objective if hasattr(objective, "prepare") else None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prepared = [self.objective.prepare(row) for row in rows] if self.objective is not None else None
        return {"rows": rows, "prepared": prepared}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for spawned workers: the objective with its reranker's LM reduced to the tokenizer
        (``prepare`` only tokenizes; the model stays in the training process)."""
        objective = self.objective
        reranker = getattr(objective, "reranker", None)
        if reranker is not None and hasattr(getattr(reranker, "lm", None), "without_model"):
            reranker = copy.copy(reranker)
            reranker.lm = reranker.lm.without_model()
            objective = copy.copy(objective)
            objective.reranker = reranker
        return {"objective": objective}


class LLMTrainer(Trainer):
    """A ``Trainer`` whose loss is ``objective(model, rows, prepared)``; the objective's ``pop_logs`` feed the log."""

    def __init__(self, *args: Any, objective: Callable[..., torch.Tensor], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss = objective
        self.model_accepts_loss_kwargs = False  # the loss is a mean per step: scale it for gradient accumulation

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss = self.loss(model, inputs["rows"], inputs.get("prepared"))
        return (loss, {}) if return_outputs else loss


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` of left-padded sequences (all ending at the last column)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def train_llm_reranker(
    kind: str,
    model: str,
    source: CandidateSource,
    out: str | Path,
    *,
    size: int,
    objective: Callable[[CausalLM], Any],
    options: dict[str, Any],
    settings: TrainSettings,
    lora: LoRASettings,
    force: bool,
    progress: bool,
    callbacks: Sequence[Any],
) -> TrainResult:
    """The shared flow: check the input, load the LM, build the dataset and the trainer, train, save.

    ``size``: candidates kept per list; ``objective(lm)`` builds the loss callable; ``options`` are
    the trainer's own settings, recorded in the run's identity.
    """
    summary = summarize(source, size)
    out = Path(out)
    description = {"kind": kind, "model": model, **options, "lora": asdict(lora), "settings": settings.to_dict(),
                   "data": source_description(source), "input": summary}
    identity = run_identity(settings, description, source.signature())
    finished = finished_run(out, identity)
    if finished is not None:
        return finished
    prepare_out(out, identity, description, force=force)
    lm = load_trainable(model)
    args = training_arguments(TrainingArguments, settings, out, progress=progress, remove_unused_columns=False)
    with args.main_process_first():
        dataset = to_dataset(lambda: candidate_rows(source, size), out / "checkpoints" / "dataset", identity)
    from transformers import set_seed

    set_seed(settings.seed)  # LoRA's A matrices start from the run's seed: equal settings, equal weights
    trainable = with_lora(lm.model, lora)
    loss = objective(lm)
    trainer = with_loss_logs(LLMTrainer)(model=trainable, args=args, train_dataset=dataset,
                                         data_collator=PreparedRows(loss), objective=loss, callbacks=list(callbacks))
    return run_training(trainer, out, save_model=lambda path: save_reranker(trainable, lm.tokenizer, path),
                        description=description,
                        identity=identity)
