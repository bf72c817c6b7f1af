"""Open any index folder rankwise wrote as a retriever, by the kind its manifest names."""

from __future__ import annotations

from pathlib import Path

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.retriever import Retriever
from rankwise.retrieval.manifest import MANIFEST, read_manifest


def open_retriever(index_dir: str | Path, *, model: str | None = None, backend: str | None = None,
                   batch_size: int = 64, corpus: Corpus | None = None) -> Retriever:
    """A :class:`DenseRetriever` or :class:`BM25Retriever` for ``index_dir``.

    ``model`` overrides the encoder named in a dense index's manifest (it must have the same fingerprint);
    ``backend`` (default: the one the manifest records) the backend that runs it. With ``corpus``, an
    index built from other documents is refused.
    """
    manifest = read_manifest(index_dir, verify=False)
    kind = manifest["kind"]
    if corpus is not None and manifest.get("source", {}).get("sha256") != corpus.fingerprint:
        raise InputError(f"was built from another corpus than {corpus.path}", path=Path(index_dir) / MANIFEST,
                         field="source.sha256")
    if kind == "dense":
        from rankwise.retrieval.dense import DenseRetriever

        return DenseRetriever(index_dir, model, backend=backend, batch_size=batch_size)
    if kind == "bm25":
        from rankwise.retrieval.bm25 import BM25Retriever

        return BM25Retriever(index_dir)
    if kind == "dense-shard":
        raise InputError("is one shard of an index: join the shards first with `rankwise index --merge`", path=index_dir)
    raise InputError(f"cannot search an index of kind {kind!r}", path=index_dir)
