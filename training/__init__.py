"""Training retrievers and rerankers on MS MARCO-style triples: built on retrieval's index layer.

Heavy imports (torch, sentence-transformers) happen when a name is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainingInput": "rankwise.training.data",
    "TrainingSample": "rankwise.training.data",
    "read_training_samples": "rankwise.training.data",
    "check_training_input": "rankwise.training.data",
    "mine_negatives": "rankwise.training.mining",
    "MiningStats": "rankwise.training.mining",
    "TrainSettings": "rankwise.training.settings",
    "TrainResult": "rankwise.training.runner",
    "train_bi_encoder": "rankwise.training.bi_encoder",
    "train_cross_encoder": "rankwise.training.cross_encoder",
    "BI_ENCODER_LOSSES": "rankwise.training.bi_encoder",
    "CROSS_ENCODER_LOSSES": "rankwise.training.cross_encoder",
    "PGRankSettings": "rankwise.training.settings",
    "train_listwise": "rankwise.training.listwise",
    "train_groupwise": "rankwise.training.groupwise",
    "LISTWISE_LOSSES": "rankwise.training.listwise",
    "GROUPWISE_LOSSES": "rankwise.training.groupwise",
    "LoRASettings": "rankwise.training.llm",
    "RunInput": "rankwise.training.candidates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
