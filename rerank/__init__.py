"""Rerankers behind one protocol: pointwise (cross-encoder, LLM yes/no and ERank), listwise (FIRST), groupwise;
any of them over passages, and IDCM."""

from rankwise.rerank.base import Reranker, RerankStats
from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
from rankwise.rerank.groupwise import GroupwiseReranker
from rankwise.rerank.idcm import IDCMReranker
from rankwise.rerank.listwise import ListwiseReranker
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.passages import PassageReranker
from rankwise.rerank.pointwise import LLMPointwiseReranker
from rankwise.rerank.spec import RerankerSpec, load_reranker, parse_spec
from rankwise.rerank.stage import Rerank

__all__ = [
    "CausalLM", "CrossEncoderReranker", "GroupwiseReranker", "IDCMReranker", "LLMPointwiseReranker",
    "ListwiseReranker", "PassageReranker", "Rerank", "RerankerSpec",
    "RerankStats", "Reranker", "init_cross_encoder", "load_reranker", "parse_spec",
]
