"""FIRST: language modelling on the gold ranking plus a weighted RankNet on the first identifier's logits.

Reddy, Doo, Xu, Sultan, Swain, Sil and Ji, "FIRST: Faster Improved Listwise Reranking with Single
Token Decoding", EMNLP 2024. A listwise reranker reads a window of passages labelled ``[A]``,
``[B]``, ... and writes their ranking; FIRST reads the ranking from the logits of the *first*
identifier it would generate alone, so training adds a learning-to-rank loss on those logits to the
usual language-modelling loss on the gold permutation string:

    L = L_LM + lambda * L_rank,
    L_rank = sum_{i, j: r_i < r_j} 1 / (r_i + r_j) * log(1 + exp(s_j - s_i)),

where ``s`` are the first-position logits of the window's identifiers and ``r`` the gold ranks
(1 = best): RankNet over the pairs of the gold order, weighted so that mistakes near the top cost
most. With graded qrels (ties) only the pairs whose labels differ count; with a teacher's scores
(a strict order) that is every pair, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def first_rank_loss(logits: Tensor, labels: Tensor, valid: Tensor | None = None) -> Tensor:
    """Weighted RankNet of FIRST, mean over windows: ``[B, m]`` identifier logits and labels.

    The gold rank of a passage is its position when the window is sorted by label, best first, ties
    in window order; ``valid`` ([B, m] bool) masks the padding of windows shorter than ``m``.
    """
    labels = labels.float()
    valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid
    keyed = torch.where(valid, labels, torch.full_like(labels, float("-inf")))
    order = torch.sort(keyed, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, labels.shape[-1] + 1, device=labels.device).expand_as(order))
    better = (labels[:, :, None] > labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    weights = better / (ranks[:, :, None] + ranks[:, None, :]).float()
    pairs = F.softplus(logits.float()[:, None, :] - logits.float()[:, :, None])  # [b, i, j]: log(1 + e^(s_j - s_i))
    return (weights * pairs).sum(dim=(1, 2)).mean()


def first_loss(lm_loss: Tensor, rank_loss: Tensor, rank_weight: float = 1.0) -> Tensor:
    """The combined objective ``L_LM + lambda * L_rank``."""
    return lm_loss + rank_weight * rank_loss
