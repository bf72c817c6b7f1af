"""STAR: static hard negatives mixed with random in-batch negatives, pairwise loss.

Zhan, Mao, Liu, Guo, Zhang and Ma, "Optimizing Dense Retrieval Model Training with Hard
Negatives", SIGIR 2021. STAR (Stable Training Algorithm for dense Retrieval) trains query and
document encoders on *static* hard negatives mined once before training (unstable alone) and
stabilises them with *random* negatives, obtained cheaply by reusing the other documents of the
batch. Both use the RankNet pairwise loss ``log(1 + exp(s(q, d-) - s(q, d+)))``.

Here, for query ``i`` with positive ``p_i`` and hard negatives ``h_i1..h_ik``, the loss is the mean
over its hard negatives plus ``random_weight`` times the mean over the random negatives (every
other positive and hard negative of the batch, gathered across processes under DDP), averaged
over the batch. Scores are the model's similarity times ``scale`` (a temperature: cosine lies in
[-1, 1], too narrow a range for a logistic loss).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class STARLoss(nn.Module):
    """Pairwise (RankNet) loss over static hard negatives plus in-batch random negatives (STAR)."""

    def __init__(self, model: Any, scale: float = 20.0, random_weight: float = 1.0,
                 gather_across_devices: bool = True) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.random_weight = random_weight
        self.gather_across_devices = gather_across_devices

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features))

    def _similarity(self, a: Tensor, b: Tensor) -> Tensor:
        if (self.model.similarity_fn_name or "cosine") == "cosine":
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return a @ b.T

    def compute_loss_from_embeddings(self, embeddings: list[Tensor]) -> Tensor:
        """``embeddings``: [queries, positives, hard negative 1, ..., hard negative k], each ``[B, dim]``."""
        from sentence_transformers.util import all_gather_with_grad, get_rank

        if len(embeddings) < 3:
            raise ValueError("STARLoss needs (query, positive, negative_1, ...) columns: at least one hard negative")
        queries, docs = embeddings[0], embeddings[1:]
        b, k = queries.size(0), len(docs) - 1
        offset = 0
        if self.gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized():
            docs = [all_gather_with_grad(d) for d in docs]
            offset = get_rank() * b
        world = docs[0].size(0)
        pool = torch.cat(docs, dim=0)  # [(k + 1) * world, dim]: column-major blocks of positives, negatives 1..k
        scores = self._similarity(queries, pool) * self.scale  # [b, (k + 1) * world]
        rows = torch.arange(b, device=queries.device)
        own = offset + rows
        positive = scores[rows, own]  # [b]
        hard_idx = torch.stack([(j + 1) * world + own for j in range(k)], dim=1)  # [b, k]
        hard = scores.gather(1, hard_idx)
        hard_loss = F.softplus(hard - positive[:, None]).mean(dim=1)
        random_mask = torch.ones_like(scores, dtype=torch.bool)
        random_mask[rows, own] = False
        random_mask.scatter_(1, hard_idx, False)
        random_pairs = F.softplus(scores - positive[:, None]) * random_mask
        counts = random_mask.sum(dim=1).clamp(min=1)
        random_loss = random_pairs.sum(dim=1) / counts
        return (hard_loss + self.random_weight * random_loss).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "random_weight": self.random_weight}

    @property
    def citation(self) -> str:
        return "Zhan et al., Optimizing Dense Retrieval Model Training with Hard Negatives, SIGIR 2021"
