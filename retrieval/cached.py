"""Indexes kept in rankwise's cache, keyed by the corpus: one piece of code for evaluation and mining.

An index of a corpus lives under ``cache_root()/indexes/<name>-<corpus sha256[:16]>/``: ``bm25/``
for BM25 and ``dense-<encoder index key>-<index type>/`` for a dense index (the key is the fingerprint's
first 16 characters, plus ``-`` and the backend for an exported one: an index encoded by one
backend is not silently reused for another, and quantized vectors never share a torch index). ``name`` is the
dataset's name (by default the corpus's folder, or its file name without suffixes). A cached index
is reused when its manifest matches the corpus (and, for dense indexes, the encoder and config);
otherwise it is built (or a killed build resumed) in place. Several processes share the cache: a
build in progress elsewhere holds the folder's lock (:mod:`rankwise.retrieval.locks`), and another
process that needs the same index says so, waits for it and reuses it, never a half-built one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.index import IndexConfig
from rankwise.retrieval.locks import folder_lock
from rankwise.retrieval.manifest import MANIFEST, read_manifest
from rankwise.retrieval.models import DEFAULT_ENCODER
from rankwise.retrieval.paths import cache_root

if TYPE_CHECKING:
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.retriever import Retriever

KINDS = ("bm25", "dense", "hybrid")
_STANDARD_FILES = ("corpus.jsonl", "corpus.jsonl.gz", "collection.tsv", "collection.tsv.gz")


def corpus_name(corpus: Corpus) -> str:
    """The default cache name of a corpus: its folder for ``corpus.jsonl`` / ``collection.tsv``, else its file stem."""
    path = corpus.path
    if path.name in _STANDARD_FILES:
        return path.resolve().parent.name or "corpus"
    return path.name.split(".")[0] or "corpus"


def index_root(corpus: Corpus, name: str | None = None) -> Path:
    """``cache_root()/indexes/<name>-<corpus fingerprint[:16]>``: where the indexes of ``corpus`` are kept."""
    label = Path(name).name if name else corpus_name(corpus)
    return cache_root() / "indexes" / f"{label}-{corpus.fingerprint[:16]}"


def bm25_index(corpus: Corpus, *, name: str | None = None, progress: bool = True) -> Path:
    """The cached BM25 index of ``corpus``, built when missing or stale."""
    from rankwise.retrieval.bm25 import build_bm25_index

    folder = index_root(corpus, name) / "bm25"
    with folder_lock(folder, wait=True):
        if (folder / MANIFEST).is_file():
            manifest = read_manifest(folder, kinds=("bm25",), verify=False)
            if manifest.get("source", {}).get("sha256") == corpus.fingerprint:
                return folder
        build_bm25_index(corpus, folder, force=True, progress=progress)
    return folder


def dense_index(corpus: Corpus, encoder: Encoder, config: IndexConfig | None = None, *, name: str | None = None,
                progress: bool = True) -> Path:
    """The cached dense index of ``corpus`` for ``encoder`` and ``config`` (built, resumed or reused)."""
    from rankwise.retrieval.index import build_dense_index

    config = config or IndexConfig()
    key = getattr(encoder, "index_key", encoder.fingerprint[:16])
    folder = index_root(corpus, name) / f"dense-{key}-{config.type}"
    with folder_lock(folder, wait=True):
        build_dense_index(corpus, encoder, folder, config, force=True, progress=progress)
    return folder


def cached_retriever(
    corpus: Corpus,
    kind: str,
    model: str | Encoder | None = None,
    *,
    name: str | None = None,
    index_type: str = "flat",
    backend: Backend | str = "torch",
    batch_size: int = 64,
    fusion: str = "rrf",
    alpha: float = 0.5,
    fusion_depth: int = 1000,
    progress: bool = True,
) -> Retriever:
    """A retriever over the cached index(es) of ``corpus``, building what is missing.

    ``kind`` is ``bm25``, ``dense`` (``model``: an encoder name, path or :class:`Encoder`; default
    all-MiniLM-L6-v2) or ``hybrid`` (a :class:`rankwise.retrieval.hybrid.HybridRetriever` fusing BM25 first
    and dense second, by ``fusion`` over the top ``fusion_depth`` of each).
    """
    if kind not in KINDS:
        raise InputError(f"unknown retriever {kind!r}; choose from {', '.join(KINDS)}", field="retriever")
    if kind == "bm25":
        from rankwise.retrieval.bm25 import BM25Retriever

        return BM25Retriever(bm25_index(corpus, name=name, progress=progress))
    if kind == "dense":
        from rankwise.retrieval.dense import DenseRetriever
        from rankwise.retrieval.encoder import Encoder

        from rankwise.retrieval.backend.calibration import corpus_calibration

        encoder = model if isinstance(model, Encoder) else Encoder(model or DEFAULT_ENCODER, backend=backend,
                                                                    batch_size=batch_size,
                                                                    calibration=lambda: corpus_calibration(corpus))
        folder = dense_index(corpus, encoder, IndexConfig(type=index_type), name=name, progress=progress)
        return DenseRetriever(folder, encoder)
    from rankwise.retrieval.hybrid import FUSIONS, HybridRetriever

    if fusion not in FUSIONS:  # before any indexing
        raise InputError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}", field="fusion")
    common = dict(name=name, index_type=index_type, backend=backend, batch_size=batch_size,
                  progress=progress)
    return HybridRetriever(cached_retriever(corpus, "bm25", **common), cached_retriever(corpus, "dense", model, **common),
                           fusion=fusion, alpha=alpha, depth=fusion_depth)
