"""Rerankers behind one protocol: pointwise (cross-encoder, LLM yes/no and ERank), listwise (FIRST), groupwise;
any of them over passages, and IDCM."""

from rerank.base import Reranker, RerankStats
from rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
from rerank.groupwise import GroupwiseReranker
from rerank.idcm import IDCMReranker
from rerank.listwise import ListwiseReranker
from rerank.llm import CausalLM
from rerank.passages import PassageReranker
from rerank.pointwise import LLMPointwiseReranker
from rerank.spec import load_reranker, parse_spec

__all__ = [
    "CausalLM", "CrossEncoderReranker", "GroupwiseReranker", "IDCMReranker", "LLMPointwiseReranker",
    "ListwiseReranker", "PassageReranker",
    "RerankStats", "Reranker", "init_cross_encoder", "load_reranker", "parse_spec",
]
