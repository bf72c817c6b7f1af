"""First-stage retrieval: data formats, Run, encoders, the FAISS index layer, BM25, fusion."""

from retrieval.bm25 import BM25Retriever, build_bm25_index
from retrieval.dense import DenseRetriever
from retrieval.encoder import Encoder
from retrieval.errors import InputError
from retrieval.formats import Corpus, Document, read_qrels, read_queries
from retrieval.fusion import interpolate, normalize, rrf
from retrieval.hybrid import HybridRetriever, Retriever, fuse
from retrieval.index import DenseIndex, IndexConfig, build_dense_index, merge_shards
from retrieval.open import open_retriever
from retrieval.run import Run

__all__ = [
    "BM25Retriever", "Corpus", "DenseIndex", "DenseRetriever", "Document", "Encoder", "HybridRetriever",
    "IndexConfig", "InputError", "Retriever", "Run", "build_bm25_index", "build_dense_index", "fuse",
    "interpolate", "merge_shards", "normalize", "open_retriever", "read_qrels", "read_queries", "rrf",
]
