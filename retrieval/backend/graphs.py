"""The torch modules that are exported: each returns only what its users read.

- :class:`EncoderGraph`: token ids -> the sentence embedding, pooled (and L2-normalised for cosine
  models) inside the graph;
- :class:`CrossEncoderGraph`: a pair's token ids -> one relevance score (:func:`pair_scores`);
- :class:`CausalLMGraph`: token ids, an attention mask given per query position (``allowed
  [batch, seq, seq]``, so left padding and the shared-prefix tails of
  :meth:`rankwise.rerank.llm.CausalLM.iter_tail_logits` are one input), position ids, the positions to read
  and the token ids to read there -> ``logits [batch, positions, token ids]``. The LM head runs only
  at the positions read and only for the token ids read, never over the full vocabulary at every
  position.
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


class CausalLMGraph(torch.nn.Module):
    """A causal LM's logits, read only at ``positions [batch, k]`` and only for ``token_ids [v]``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        if self.decoder is None or self.head is None:
            raise ValueError("the model has no decoder / output embeddings to export")
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def forward(self, input_ids: torch.Tensor, allowed: torch.Tensor, position_ids: torch.Tensor,
                positions: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
        hidden = self.decoder(input_ids=input_ids, attention_mask=mask[:, None], position_ids=position_ids,
                              use_cache=False).last_hidden_state
        picked = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = picked @ self.head.weight.index_select(0, token_ids).T
        if self.head.bias is not None:
            logits = logits + self.head.bias.index_select(0, token_ids)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float()
