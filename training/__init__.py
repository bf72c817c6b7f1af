"""Training retrievers and rerankers on MS MARCO-style triples: built on retrieval's index layer.

Heavy imports (torch, sentence-transformers) happen when a name is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainingInput": "training.data",
    "TrainingSample": "training.data",
    "read_training_samples": "training.data",
    "check_training_input": "training.data",
    "mine_negatives": "training.mining",
    "MiningStats": "training.mining",
    "TrainSettings": "training.settings",
    "TrainResult": "training.runner",
    "train_bi_encoder": "training.bi_encoder",
    "train_cross_encoder": "training.cross_encoder",
    "BI_ENCODER_LOSSES": "training.bi_encoder",
    "CROSS_ENCODER_LOSSES": "training.cross_encoder",
    "PGRankSettings": "training.settings",
    "train_listwise": "training.listwise",
    "train_groupwise": "training.groupwise",
    "LISTWISE_LOSSES": "training.listwise",
    "GROUPWISE_LOSSES": "training.groupwise",
    "LoRASettings": "training.llm",
    "RunInput": "training.candidates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
