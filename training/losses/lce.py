"""LCE: localized contrastive estimation for cross-encoders (softmax over a positive and its hard negatives).

Gao, Dai and Callan, "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline",
ECIR 2021. Each query's positive is scored against its own group of hard negatives (from the
first-stage retriever the reranker will serve), and the loss is the cross-entropy of the
positive under the softmax of the raw logits. Unlike pointwise BCE it has no class prior to
learn first: only the order inside each group matters. sentence-transformers'
``MultipleNegativesRankingLoss`` for cross-encoders is this loss plus sampled in-batch negatives
and a sigmoid; here the in-batch negatives are left out and the logits used as they are.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
from torch import nn


class LCELoss(MultipleNegativesRankingLoss):
    """Softmax cross-entropy of (positive, hard negative 1..k) per query, raw logits (Gao et al., 2021)."""

    def __init__(self, model: Any) -> None:
        super().__init__(model, num_negatives=None, scale=1.0, activation_fn=nn.Identity())

    def get_in_batch_negatives(self, anchors: list[str], candidates: list[list[str]]) -> Generator[list[str], None, None]:
        yield from ()

    @property
    def citation(self) -> str:
        return "Gao, Dai and Callan, Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline, ECIR 2021"
