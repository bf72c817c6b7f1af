"""ListNet on score tensors: the cross-entropy between the label and score softmax distributions.

Cao, Qin, Liu, Tsai and Li, "Learning to Rank: From Pairwise Approach to Listwise Approach", ICML
2007 (the top-one probability form). sentence-transformers' ``ListNetLoss`` computes it for
cross-encoders from (query, documents) pairs; the groupwise LLM trainer has its scores already
(one per document of a group), so it uses this function on them.
"""

from __future__ import annotations

from torch import Tensor


def listnet_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """``-sum_i softmax(labels)_i log softmax(scores)_i``, mean over lists: ``[B, n]`` scores and labels."""
    return -(labels.float().softmax(-1) * scores.float().log_softmax(-1)).sum(-1).mean()
