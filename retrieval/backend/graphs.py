"""The torch modules that are exported: each returns only what its users read.

- :class:`EncoderGraph`: token ids -> the sentence embedding, pooled (and L2-normalised for cosine
  models) inside the graph;
- :class:`CrossEncoderGraph`: a pair's token ids -> one relevance score (:func:`pair_scores`);

The causal LM's graph is the causal-LM kind's own (:mod:`rankwise.rerank.onnx.graph`).
"""

from __future__ import annotations

from typing import Any

import torch


def pair_scores(logits: torch.Tensor) -> torch.Tensor:
    """A cross-encoder's score per pair: the logit (one label) or relevant-minus-irrelevant (two or more)."""
    if logits.dim() == 1:
        return logits
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits[:, -1] - logits[:, 0]


def _features(input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        features["token_type_ids"] = token_type_ids
    return features


class EncoderGraph(torch.nn.Module):
    """A sentence-transformers bi-encoder: token ids -> sentence embedding (normalised when ``normalize``)."""

    def __init__(self, model: Any, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.model(_features(input_ids, attention_mask, token_type_ids))["sentence_embedding"].float()
        return torch.nn.functional.normalize(emb, p=2, dim=1) if self.normalize else emb


class CrossEncoderGraph(torch.nn.Module):
    """A sentence-transformers ``CrossEncoder``: a pair's token ids -> its score."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return pair_scores(self.model(_features(input_ids, attention_mask, token_type_ids))["scores"].float())
