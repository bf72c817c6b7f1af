"""The causal LM's exported module (the causal-LM kind's graph; the shared machinery is :mod:`rankwise.retrieval.backend`).

:class:`CausalLMGraph`: token ids, an attention mask given per query position (``allowed
[batch, seq, seq]``, so left padding and the shared-prefix tails of
:meth:`rankwise.rerank.llm.CausalLM.iter_tail_logits` are one input), position ids, the positions to read
and the token ids to read there -> ``logits [batch, positions, token ids]``. The LM head runs only
at the positions read and only for the token ids read, never over the full vocabulary at every
position.
"""

from __future__ import annotations

from typing import Any

import torch


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
