"""Rerankers behind one protocol: pointwise (cross-encoder, LLM yes/no and ERank), listwise (FIRST), groupwise."""

from rerank.base import Reranker, RerankStats
from rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
from rerank.groupwise import GroupwiseReranker
from rerank.listwise import ListwiseReranker
from rerank.llm import CausalLM
from rerank.pointwise import LLMPointwiseReranker
from rerank.spec import load_reranker, parse_spec

__all__ = [
    "CausalLM", "CrossEncoderReranker", "GroupwiseReranker", "LLMPointwiseReranker", "ListwiseReranker",
    "RerankStats", "Reranker", "init_cross_encoder", "load_reranker", "parse_spec",
]
