"""ADORE: the query encoder learns against a fixed document index, negatives re-retrieved as it moves.

Zhan, Mao, Liu, Guo, Zhang and Ma, "Optimizing Dense Retrieval Model Training with Hard
Negatives", SIGIR 2021. ADORE (Algorithm for Directly Optimizing Ranking pErformance) keeps the
document encoder and its index fixed and trains only the query encoder. At every step each
query of the batch is searched in the index with the *current* query encoder, so the negatives
are the documents the model would actually rank above the positives now (dynamic hard
negatives); the loss is pairwise (RankNet) over (positive, retrieved negative) pairs, each pair
weighted by how much swapping the two would change the ranking metric, as in LambdaRank/LambdaLoss:
``|gain(rank_pos) - gain(rank_neg)|`` with ``gain(r) = 1/r`` (MRR) or ``1/log2(r + 1)`` (nDCG),
zero beyond the metric's cut-off.

Document vectors come from the index itself (:meth:`rankwise.retrieval.index.DenseIndex.reconstruct`), so
the documents are exactly those searched; the positive's rank is counted against the retrieved
scores (``depth + 1`` when every retrieved document scores higher).
The batch's ``label`` column holds each sample's query number; ``positives[n]`` lists that
query's relevant index rows (all are excluded from its negatives).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

METRICS = ("mrr", "ndcg")


def rank_gain(ranks: Tensor, metric: str, cut: int | None) -> Tensor:
    """The metric's gain at 1-based ``ranks``: ``1/r`` (mrr) or ``1/log2(r + 1)`` (ndcg), 0 past ``cut``."""
    ranks = ranks.float()
    gain = 1.0 / ranks if metric == "mrr" else 1.0 / torch.log2(ranks + 1.0)
    return gain if cut is None else torch.where(ranks <= cut, gain, torch.zeros_like(gain))


class ADORELoss(nn.Module):
    """Metric-weighted pairwise loss against negatives re-retrieved from a fixed index (ADORE)."""

    def __init__(self, model: Any, index: Any, positives: Sequence[Sequence[int]], *, depth: int = 200,
                 metric: str = "mrr", cut: int | None = None, scale: float = 20.0) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown ADORE metric {metric!r}; choose from {', '.join(METRICS)}")
        self.model = model
        self.index = index
        self.positives = [np.asarray(p, dtype=np.int64) for p in positives]
        self.depth, self.metric, self.cut, self.scale = depth, metric, cut, scale
        self.cosine = (index.manifest.get("encoder", {}).get("similarity") or "cosine") == "cosine"

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        queries = embed_columns(self.model, sentence_features)[0]
        return self.compute_loss_from_embeddings(queries, labels)

    def compute_loss_from_embeddings(self, queries: Tensor, labels: Tensor) -> Tensor:
        """``queries`` ``[B, dim]`` (with grad), ``labels`` ``[B]`` query numbers."""
        if self.cosine:
            queries = F.normalize(queries, dim=-1)
        scores, rows = self.index.search(queries.detach().float().cpu().numpy(), self.depth)
        losses = []
        for i, number in enumerate(labels.view(-1).tolist()):
            positive_rows = self.positives[int(number)]
            retrieved = rows[i][rows[i] >= 0]
            negative_rows = retrieved[~np.isin(retrieved, positive_rows)]
            if not len(positive_rows) or not len(negative_rows):
                continue
            vectors = torch.from_numpy(self.index.reconstruct(np.concatenate([positive_rows, negative_rows])))
            vectors = vectors.to(queries.device, queries.dtype)
            s = vectors @ queries[i]  # [P + N]
            s_pos, s_neg = s[:len(positive_rows)], s[len(positive_rows):]
            with torch.no_grad():
                # ranks under the current scores: negatives keep their retrieved order; a positive is
                # placed among the retrieved scores (depth + 1 when it is below all of them)
                retrieved_scores = torch.as_tensor(scores[i][: len(retrieved)], device=s.device, dtype=s.dtype)
                neg_positions = np.flatnonzero(~np.isin(retrieved, positive_rows))
                neg_rank = torch.as_tensor(neg_positions + 1, device=s.device)
                pos_rank = 1 + (retrieved_scores[None, :] > s_pos.detach()[:, None]).sum(dim=1)
                weight = (rank_gain(pos_rank, self.metric, self.cut)[:, None]
                          - rank_gain(neg_rank, self.metric, self.cut)[None, :]).abs()  # [P, N]
            pairs = F.softplus(self.scale * (s_neg[None, :] - s_pos[:, None]))
            losses.append((weight * pairs).sum() / len(positive_rows))
        if not losses:
            return queries.sum() * 0.0
        return torch.stack(losses).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "metric": self.metric, "cut": self.cut, "scale": self.scale}

    @property
    def citation(self) -> str:
        return "Zhan et al., Optimizing Dense Retrieval Model Training with Hard Negatives, SIGIR 2021"
