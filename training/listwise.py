"""FIRST training of the listwise LLM reranker (Reddy et al., EMNLP 2024).

Each training list (:mod:`rankwise.training.candidates`: mined triples / n-tuples, or a run's top-k with
qrels) becomes one window of at most ``window`` passages, shown in ``order``: ``"retrieved"`` (the
list's own order, as the reranker's sliding windows show a first-stage run at inference, so the
model may keep the retriever's prior) or ``"shuffled"`` (a shuffle seeded by ``seed`` and the query,
so it cannot). On SciFact with 60 training windows, SmolLM2-135M trained on shuffled windows came out
preferring two late identifiers whatever the passages and ranked BM25 top-20 at nDCG@10 0.016 (see
BENCHMARKS.md); in retrieved order it reached 0.722 against 0.707 untrained. The window is written
in exactly the prompt :class:`rankwise.rerank.listwise.ListwiseReranker` builds at inference
(:meth:`~rerank.listwise.ListwiseReranker.window_prompt`, passages truncated the same way). The
gold ranking sorts the window by label, ties kept in window order (FIRST's own tie rule at
inference), and the target is its answer string ``C] > [A] > ...`` (continuing the prompt's ``[``;
:meth:`~rerank.listwise.ListwiseReranker.answer_ids`). One forward pass over prompt + answer gives

* the language-modelling loss on the answer tokens, and
* the logits of the first answer token at the window's identifiers, trained with FIRST's weighted
  RankNet (:func:`rankwise.training.losses.first.first_rank_loss`),

combined as ``L_LM + rank_weight * L_rank`` (:mod:`rankwise.training.losses.first`); both terms are logged.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rankwise.rerank.listwise import ListwiseReranker
from rankwise.rerank.llm import CausalLM
from rankwise.retrieval.errors import InputError
from rankwise.training.candidates import CandidateSource
from rankwise.training.llm import LoRASettings, left_padded, model_device, train_llm_reranker
from rankwise.training.losses.first import first_loss, first_rank_loss
from rankwise.training.losses.stats import LoggedStats, WithLoggedStats
from rankwise.training.runner import TrainResult
from rankwise.training.settings import LISTWISE_LOSSES, TrainSettings
from rankwise.training.settings import LISTWISE_ORDERS as ORDERS


def _checked_order(order: str) -> str:
    """``order`` when it is one of :data:`ORDERS`; an :class:`InputError` otherwise."""
    if order not in ORDERS:
        raise InputError(f"unknown window order {order!r}; choose from {', '.join(ORDERS)}", field="order")
    return order


class FIRSTObjective(WithLoggedStats):
    """FIRST's combined loss over a batch of candidate lists (rows ``{"query", "docs", "labels"}``)."""

    def __init__(self, lm: CausalLM, *, window: int = 20, rank_weight: float = 1.0, max_passage_tokens: int = 100,
                 seed: int = 0, order: str = "retrieved") -> None:
        self.order = _checked_order(order)
        self.reranker = ListwiseReranker(lm, mode="first", window=window, stride=window,
                                         max_passage_tokens=max_passage_tokens)
        self.rank_weight, self.seed = rank_weight, seed
        self.logged = LoggedStats()

    def shown(self, row: dict[str, Any]) -> tuple[list[str], list[float]]:
        """The list's documents and labels in window order: the list's own, or a shuffle seeded by ``seed``
        and the query."""
        if self.order == "retrieved":
            return list(row["docs"]), [float(x) for x in row["labels"]]
        shown = np.random.default_rng([self.seed, zlib.crc32(row["query"].encode("utf-8"))]).permutation(len(row["docs"]))
        return [row["docs"][i] for i in shown], [float(row["labels"][i]) for i in shown]

    def window(self, row: dict[str, Any]) -> tuple[list[int], list[int], list[float]]:
        """``(prompt ids, answer ids, labels in window order)`` of one list, gold-ranked."""
        docs, labels = self.shown(row)
        gold = sorted(range(len(docs)), key=lambda k: -labels[k])  # stable: ties keep the window order
        prompt = self.reranker.window_prompt(row["query"], docs)
        return self.reranker.lm.tokenizer.encode(prompt, add_special_tokens=False), self.reranker.answer_ids(gold), labels

    def prepare(self, row: dict[str, Any]) -> tuple[list[int], list[int], list[float]]:
        """What the collate function computes in a DataLoader worker: the tokenized :meth:`window`."""
        return self.window(row)

    def __call__(self, model: Any, rows: Sequence[dict[str, Any]],
                 prepared: Sequence[tuple[list[int], list[int], list[float]]] | None = None) -> torch.Tensor:
        windows = list(prepared) if prepared is not None else [self.window(row) for row in rows]
        answers = [len(a) for _, a, _ in windows]
        keep = max(answers) + 1
        features = left_padded([p + a for p, a, _ in windows], self.reranker.lm.tokenizer.pad_token_id,
                               model_device(model))
        logits = model(**features, logits_to_keep=keep).logits.float()  # [B, keep, vocab], right-aligned
        width = max(len(labels) for _, _, labels in windows)
        label_ids = torch.tensor(self.reranker.label_ids[:width], device=logits.device)
        lm_terms, first = [], []
        for b, (_, answer, _) in enumerate(windows):
            start = keep - len(answer) - 1  # the position that predicts the first answer token
            target = torch.tensor(answer, device=logits.device)
            lm_terms.append(F.cross_entropy(logits[b, start:keep - 1], target, reduction="sum"))
            first.append(logits[b, start].index_select(0, label_ids))
        lm_loss = torch.stack(lm_terms).sum() / sum(answers)
        labels = torch.zeros((len(windows), width), device=logits.device)
        valid = torch.zeros((len(windows), width), dtype=torch.bool, device=logits.device)
        for b, (_, _, row_labels) in enumerate(windows):
            labels[b, :len(row_labels)] = torch.tensor(row_labels, device=logits.device)
            valid[b, :len(row_labels)] = True
        rank_loss = first_rank_loss(torch.stack(first), labels, valid)
        self.logged.record(lm_loss=lm_loss.detach(), rank_loss=rank_loss.detach())
        return first_loss(lm_loss, rank_loss, self.rank_weight)


def train_listwise(
    model: str,
    source: CandidateSource,
    out: str | Path,
    *,
    loss: str = "first",
    window: int = 20,
    rank_weight: float = 1.0,
    max_passage_tokens: int = 100,
    order: str = "retrieved",
    lora: LoRASettings | None = None,
    settings: TrainSettings | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a causal LM as a FIRST listwise reranker on ``source``; the model is saved in ``out``.

    ``window``: passages per training window (the first ``window`` candidates of each list);
    ``rank_weight``: lambda of ``L_LM + lambda * L_rank``; ``order``: ``"retrieved"`` or ``"shuffled"``
    windows (module doc); ``lora``: LoRA settings (``enabled=False``:
    full fine-tuning). The saved folder loads as ``listwise:OUT``. Resumes from ``out/checkpoints``.
    """
    if loss not in LISTWISE_LOSSES:
        raise InputError(f"unknown listwise loss {loss!r}; choose from {', '.join(LISTWISE_LOSSES)}", field="loss")
    if window < 2:
        raise InputError(f"a window needs at least 2 passages, got {window}", field="window")
    if rank_weight < 0:
        raise InputError(f"rank weight must be non-negative, got {rank_weight}", field="rank_weight")
    _checked_order(order)
    settings = settings or TrainSettings()
    options = {"loss": loss, "window": window, "rank_weight": rank_weight, "max_passage_tokens": max_passage_tokens,
               "order": order}
    return train_llm_reranker(
        "listwise", model, source, out, size=window, options=options, settings=settings,
        lora=lora or LoRASettings(), force=force, progress=progress, callbacks=callbacks,
        objective=lambda lm: FIRSTObjective(lm, window=window, rank_weight=rank_weight,
                                            max_passage_tokens=max_passage_tokens, seed=settings.seed, order=order))
