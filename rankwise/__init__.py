"""rankwise: neural retrieval and reranking.

The packages install as one namespace: ``rankwise.retrieval``, ``rankwise.rerank``,
``rankwise.training``, ``rankwise.eval``. The everyday names are re-exported here and imported on
first use, so ``import rankwise`` stays light (no torch until a model is asked for)::

    from rankwise import BM25Retriever, CrossEncoderReranker, resolve_dataset
    from rankwise import BM25, Experiment      # pipelines (``BM25() >> reranker % 100``) and experiments
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # retrieval
    "BM25Retriever": "rankwise.retrieval", "Corpus": "rankwise.retrieval", "DenseIndex": "rankwise.retrieval",
    "DenseRetriever": "rankwise.retrieval", "Encoder": "rankwise.retrieval", "HybridRetriever": "rankwise.retrieval",
    "IndexConfig": "rankwise.retrieval", "InputError": "rankwise.retrieval", "Retriever": "rankwise.retrieval",
    "Run": "rankwise.retrieval", "build_bm25_index": "rankwise.retrieval", "build_dense_index": "rankwise.retrieval",
    "open_retriever": "rankwise.retrieval", "read_qrels": "rankwise.retrieval", "read_queries": "rankwise.retrieval",
    "rrf": "rankwise.retrieval", "interpolate": "rankwise.retrieval",
    "BM25": "rankwise.retrieval", "Dense": "rankwise.retrieval", "Hybrid": "rankwise.retrieval",
    "Pipeline": "rankwise.retrieval", "Cutoff": "rankwise.retrieval",
    # rerank
    "CrossEncoderReranker": "rankwise.rerank", "GroupwiseReranker": "rankwise.rerank",
    "IDCMReranker": "rankwise.rerank", "LLMPointwiseReranker": "rankwise.rerank",
    "ListwiseReranker": "rankwise.rerank", "PassageReranker": "rankwise.rerank", "Reranker": "rankwise.rerank",
    "load_reranker": "rankwise.rerank", "Rerank": "rankwise.rerank",
    # training
    "TrainSettings": "rankwise.training", "mine_negatives": "rankwise.training",
    "train_bi_encoder": "rankwise.training", "train_cross_encoder": "rankwise.training",
    "train_listwise": "rankwise.training", "train_groupwise": "rankwise.training",
    # eval
    "resolve_dataset": "rankwise.eval", "Experiment": "rankwise.eval", "parse_system": "rankwise.eval", "evaluate": "rankwise.eval", "evaluate_per_query": "rankwise.eval",
}
_SUBPACKAGES = ("retrieval", "rerank", "training", "eval")

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return import_module(f"rankwise.{name}")
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
