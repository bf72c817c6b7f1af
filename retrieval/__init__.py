"""First-stage retrieval: data formats, Run, encoders, the FAISS index layer, BM25, fusion."""

from rankwise.retrieval.bm25 import BM25Retriever, build_bm25_index
from rankwise.retrieval.dense import DenseRetriever
from rankwise.retrieval.encoder import Encoder
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, Document, read_qrels, read_queries
from rankwise.retrieval.fusion import interpolate, normalize, rrf
from rankwise.retrieval.hybrid import HybridRetriever, fuse
from rankwise.retrieval.index import DenseIndex, IndexConfig, build_dense_index, merge_shards
from rankwise.retrieval.open import open_retriever
from rankwise.retrieval.pipeline import BM25, Cutoff, Dense, Hybrid, Pipeline
from rankwise.retrieval.retriever import Retriever
from rankwise.retrieval.run import Run

__all__ = [
    "BM25", "BM25Retriever", "Cutoff", "Dense", "Hybrid", "Pipeline", "Corpus", "DenseIndex", "DenseRetriever", "Document", "Encoder", "HybridRetriever",
    "IndexConfig", "InputError", "Retriever", "Run", "build_bm25_index", "build_dense_index", "fuse",
    "interpolate", "merge_shards", "normalize", "open_retriever", "read_qrels", "read_queries", "rrf",
]
