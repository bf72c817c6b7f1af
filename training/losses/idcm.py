"""IDCM selector distillation (Hofstätter et al., 2021, "Intra-Document Cascading: Learning to Select
Passages for Neural Document Ranking", SIGIR).

The cheap selector (a bi-encoder) learns from the expensive scorer (a cross-encoder) which passages
of a document are worth scoring: over the passages of each (query, document), the student's
similarity distribution ``softmax(s / T)`` is pulled towards the teacher's ``softmax(t / T)`` with
the KL divergence ``KL(p_teacher || p_student)`` (the soft-target cross-entropy up to the teacher's
entropy, a constant), averaged over the documents of the batch. Documents have different passage
counts: padded passages carry a NaN teacher score and are masked out of both softmaxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


def selector_kl(student: Tensor, teacher: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Mean over rows of ``KL(softmax(teacher / T) || softmax(student / T))`` over the passages ``mask`` keeps.

    ``student`` and ``teacher`` are ``[documents, passages]``; ``mask`` (bool, same shape; default
    all) marks real passages. A row needs at least one real passage.
    """
    if mask is None:
        mask = torch.ones_like(teacher, dtype=torch.bool)
    low = torch.finfo(student.dtype).min
    log_q = torch.log_softmax(student.masked_fill(~mask, low) / temperature, dim=-1)
    log_p = torch.log_softmax(teacher.masked_fill(~mask, low) / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(~mask, 0.0).sum(dim=-1)
    return kl.mean()


class IDCMSelectorLoss(nn.Module):
    """Listwise KL distillation of a cross-encoder's passage scores into a bi-encoder (see the module).

    Inputs: the query column, then ``passage_1..passage_P``; ``labels`` ``[batch, P]`` are the
    teacher's scores, NaN for padding. Student scores: ``scale * cos(query, passage)`` (the dot
    product for dot-product models).
    """

    def __init__(self, model: Any, *, scale: float = 20.0, temperature: float = 1.0, cosine: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model, self.scale, self.temperature, self.cosine = model, scale, temperature, cosine

    def student_scores(self, sentence_features: Iterable[dict[str, Tensor]]) -> Tensor:
        """``[batch, P]`` student scores of the passages against their query."""
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        query, passages = embeddings[0], torch.stack(embeddings[1:], dim=1)  # [B, d], [B, P, d]
        if self.cosine:
            query = nn.functional.normalize(query, dim=-1)
            passages = nn.functional.normalize(passages, dim=-1)
        return self.scale * torch.einsum("bd,bpd->bp", query, passages)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        student = self.student_scores(sentence_features)
        mask = ~torch.isnan(labels)
        return selector_kl(student, labels.nan_to_num(0.0).to(student.dtype), mask, self.temperature)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "temperature": self.temperature, "cosine": self.cosine}

    @property
    def citation(self) -> str:
        return ("Hofstätter, Mitra, Zamani, Craswell, Hanbury (2021). Intra-Document Cascading: Learning to Select "
                "Passages for Neural Document Ranking. SIGIR.")
