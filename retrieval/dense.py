"""Dense retrieval: an :class:`Encoder` for the queries and a :class:`DenseIndex` for the documents."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.encoder import Encoder
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.index import DenseIndex
from rankwise.retrieval.manifest import MANIFEST
from rankwise.retrieval.retriever import Composable
from rankwise.retrieval.run import Run


class DenseRetriever(Composable):
    """``search(queries, k) -> Run`` over an index built by :func:`rankwise.retrieval.build_dense_index`.

    The encoder defaults to the one named in the index manifest, run by the backend the manifest
    records (``backend=None``; an index built by a quantized encoder is searched by it). An encoder whose fingerprint
    differs from the manifest's (another model, other weights, another tokenizer or pooling) is
    refused: its vectors would not live in the index's space.
    """

    def __init__(self, index: str | Path | DenseIndex, encoder: Encoder | str | None = None, *,
                 backend: Backend | str | None = None, batch_size: int = 64, gpu: bool | None = None) -> None:
        self.index = index if isinstance(index, DenseIndex) else DenseIndex.load(index, gpu=gpu)
        built_with = self.index.manifest["encoder"]
        backend = None if backend is None else Backend.parse(backend)
        if backend is not None and backend.precision != manifest_backend(built_with).precision:
            # int8 and bf16 vectors have a fingerprint of their own: refused before the model is loaded or exported
            where = (self.index.directory / MANIFEST) if self.index.directory else None
            raise InputError(f"the index was built with backend {str(manifest_backend(built_with))!r}, whose vectors "
                             f"backend {str(backend)!r} does not reproduce; search it with "
                             f"--backend {manifest_backend(built_with)} or rebuild the index", path=where,
                             field="encoder.backend")
        if encoder is None or isinstance(encoder, str):
            encoder = Encoder(encoder or built_with["name"], backend=backend or manifest_backend(built_with),
                              batch_size=batch_size, calibration=built_with.get("calibration"))
        if encoder.fingerprint != built_with["fingerprint"]:
            where = (self.index.directory / MANIFEST) if self.index.directory else None
            raise InputError(
                f"the index was built with encoder {built_with['name']!r} (fingerprint {built_with['fingerprint'][:12]}), "
                f"not with {encoder.name!r} (fingerprint {encoder.fingerprint[:12]}); search it with the same model "
                f"or rebuild the index", path=where, field="encoder.fingerprint")
        self.encoder = encoder

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
        """Encode the queries and return the top ``k`` documents of each."""
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[q] for q in qids], progress=progress)
        scores, positions = self.index.search(vectors, k)
        ids = self.index.doc_ids
        return Run({q: [(ids[p], float(s)) for s, p in zip(srow, prow) if p >= 0]
                    for q, srow, prow in zip(qids, scores, positions)}, name="dense")


def manifest_backend(built_with: dict) -> Backend:
    """The backend an index manifest's ``encoder`` record names (with ``calibration``, the key of the quantized
    OpenVINO graph it was built with); manifests written before the backend was one field keep loading."""
    return Backend.from_record(built_with, field="encoder.backend")
