"""``Encoder``: texts -> float32 vectors with any sentence-transformers or Hugging Face model.

Batches are formed from texts sorted by token length (less padding than sorting by characters,
which is what ``SentenceTransformer.encode`` does), run under ``torch.inference_mode`` and in fp16
on GPU. Queries and documents get the model's own ``query`` / ``document`` prompts when it defines
them (as in E5 or BGE models).

``backend="onnx"`` runs the same batches through ONNX Runtime (:mod:`rankwise.retrieval.backend`): the model
is exported once (cached per model fingerprint, parity-checked against torch), pooling and
normalization run inside the graph, and ``"onnx-int8"`` uses the dynamically quantized graph;
``"openvino"`` compiles the same export with OpenVINO (``"openvino-bf16"``: computing in bfloat16, on CPUs with
AMX or AVX512-BF16), and ``"openvino-int8"`` quantizes it with NNCF on
``calibration`` texts (a list, a function returning one -- called only by this backend, e.g. the first
documents of the collection being indexed --, or the key an index manifest records; default: the bundled
calibration texts). The
forward pass is the engine's (:func:`rankwise.retrieval.engines.encoder_engine`); batching is the encoder's. An fp32
ONNX encoder has the torch encoder's fingerprint (its vectors match within 1e-4, so either can
search the other's index); an int8 encoder has a fingerprint of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.backend.sources import DOC_PROMPTS, model_fingerprint
from rankwise.retrieval.batching import BatchingConfig
from rankwise.retrieval.engines import encoder_engine
from rankwise.retrieval.models import DEFAULT_ENCODER, resolve_model

__all__ = ["Backend", "BatchingConfig", "DOC_PROMPTS", "Encoder", "Encoding", "model_fingerprint"]


@dataclass(frozen=True)
class Encoding:
    """What one :meth:`Encoder.encode` call gives: the ``vectors`` (``float32 [n, dim]``) and how many of its
    texts were longer than ``max_length`` tokens and cut (None: the model has no tokenizer to count with)."""

    vectors: np.ndarray
    truncated: int | None


class Encoder:
    """A bi-encoder: ``encode_queries(texts)`` / ``encode_docs(texts)`` -> ``float32 [n, dim]``.

    ``model`` is a sentence-transformers or Hugging Face model name or a local path (a plain
    Hugging Face model gets mean pooling, as sentence-transformers gives it). Embeddings are
    L2-normalised when the model's similarity is cosine, so inner product is cosine. ``batching`` (a
    :class:`~rankwise.retrieval.batching.BatchingConfig`) sets the token budget, prefetch and slices.
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        backend: Backend | str = "torch",
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        calibration: Any = None,
        batching: BatchingConfig | None = None,
    ) -> None:
        self.backend = Backend.parse(backend)
        self.batching = batching or BatchingConfig()
        self.name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.engine = encoder_engine(self.backend, model, self.path, device=device, max_length=max_length,
                                     calibration=calibration)

    # what the engine holds, read through the encoder as before the engines
    model = property(lambda self: self.engine.model, doc="The sentence-transformers model (torch), else None.")
    session = property(lambda self: self.engine.session, doc="The ONNX Runtime session (onnx), else None.")
    export = property(lambda self: self.engine.export, doc="The checked export (onnx), else None.")
    tokenizer = property(lambda self: self.engine.tokenizer)
    similarity = property(lambda self: self.engine.similarity, doc="cosine, dot or euclidean.")
    query_prompt = property(lambda self: self.engine.query_prompt)
    doc_prompt = property(lambda self: self.engine.doc_prompt)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.engine.dim

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights, tokenizer and pooling set-up: equal fingerprints give equal vectors."""
        return self.engine.fingerprint

    @property
    def max_length(self) -> int | None:
        return self.engine.max_length

    @property
    def index_key(self) -> str:
        """The fingerprint's short form plus the backend: what names a cached index of this encoder's vectors."""
        return self.fingerprint[:16] + self.engine.index_suffix

    def describe(self) -> dict[str, Any]:
        """What an index manifest records about the encoder that built it."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "similarity": self.similarity,
            "max_length": self.max_length,
            "backend": str(self.backend),
            **({"calibration": self.engine.calibration} if self.engine.calibration else {}),
        }

    def encode_queries(self, texts: Sequence[str], progress: Any = False) -> np.ndarray:
        """Encode queries (with the model's query prompt, if any)."""
        return self.encode(texts, task="query", progress=progress).vectors

    def encode_docs(self, texts: Sequence[str], progress: Any = False) -> np.ndarray:
        """Encode documents (with the model's document prompt, if any)."""
        return self.encode(texts, task="document", progress=progress).vectors

    def encode(self, texts: Sequence[str], *, task: Literal["query", "document"] = "document",
               progress: Any = False) -> Encoding:
        """Encode ``texts`` as queries or documents (with that prompt, if any): the vectors and this call's
        count of texts cut to ``max_length``."""
        prompt = self.query_prompt if task == "query" else self.doc_prompt
        return self._encode(texts, prompt, progress, task)

    def count_truncated(self, texts: Sequence[str]) -> int | None:
        """How many of these documents (with the document prompt) are longer than ``max_length`` tokens
        (None: the model has no tokenizer to count with)."""
        from rankwise.retrieval.batching import count_truncated, tokenize

        tokenizer = self.tokenizer
        if tokenizer is None or not callable(tokenizer):
            return None
        prefixed = [self.doc_prompt + t for t in texts] if self.doc_prompt else list(texts)
        tok = tokenize(tokenizer, prefixed, max_length=self.max_length)
        return count_truncated(tokenizer, tok, prefixed, max_length=self.max_length)

    def _token_lengths(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        tokenizer = self.tokenizer
        if tokenizer is None or not callable(tokenizer):
            return np.array([len(t) for t in texts])
        prefixed = [prompt + t for t in texts] if prompt else list(texts)
        ids = tokenizer(prefixed, truncation=True, max_length=self.max_length or None,
                        add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return np.array([len(x) for x in ids])

    def _encode(self, texts: Sequence[str], prompt: str | None, progress: Any, task: str) -> Encoding:
        """Encode in length-sorted batches (:mod:`rankwise.retrieval.batching`); ``progress`` is a bool or a tqdm bar to update.

        Each text is tokenized once, on a GPU in slices of ``batching.slice_size`` (the next slice in a
        background thread while the model runs this one, :func:`rankwise.retrieval.batching.stream_batches`);
        the ids give the sort within a slice and, padded, the model's inputs (prepared ahead in
        another thread). Texts longer than ``max_length`` tokens are counted in the result's ``truncated``.
        ``task`` ("query" / "document") routes a sentence-transformers ``Router`` model (separate query
        and document encoders, e.g. ADORE's output) as ``encode_query`` / ``encode_document`` do; a model whose own ``preprocess`` gives other
        features than the shared path keeps its ``preprocess`` per batch.
        """
        from tqdm.auto import tqdm

        from rankwise.retrieval.batching import count_truncated, stream_batches, token_batches, tokenize

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        tokenizer = self.tokenizer
        counted = tokenizer is not None and callable(tokenizer)
        truncated = 0
        if not texts:
            return Encoding(out, 0 if counted else None)
        batching = self.batching
        bar = progress if hasattr(progress, "update") else tqdm(total=len(texts), desc="encoding", unit="text",
                                                                  disable=not progress, leave=False)
        engine = self.engine
        prefixed = [prompt + t for t in texts] if prompt else texts
        extras = None
        if counted:  # the check: the longest and the shortest text
            chars = [len(t) for t in texts]
            sample = sorted({int(np.argmax(chars)), int(np.argmin(chars))})
            extras = engine.extras([texts[i] for i in sample],
                                   tokenize(tokenizer, [prefixed[i] for i in sample], max_length=self.max_length),
                                   prompt, task)
        if extras is None:  # no tokenizer, or the model's own preprocess differs: it runs per batch
            if counted:
                tok = tokenize(tokenizer, prefixed, max_length=self.max_length)
                truncated += count_truncated(tokenizer, tok, prefixed, max_length=self.max_length)
                lengths = tok.lengths
            else:
                lengths = self._token_lengths(texts, prompt)
            for idx in token_batches(lengths, self.batch_size, batching.max_tokens):
                out[idx] = engine.forward_texts([texts[i] for i in idx], prompt, task)
                bar.update(len(idx))
        else:
            pending: list[tuple[np.ndarray, np.ndarray]] = []  # outputs still being copied (torch on CUDA)
            with engine.inference():
                def count(tok: Any, start: int) -> None:  # texts cut to max_length, counted exactly
                    nonlocal truncated
                    truncated += count_truncated(tokenizer, tok, prefixed[start:start + len(tok)],
                                                 max_length=self.max_length)

                for idx, features in stream_batches(tokenizer, prefixed, max_length=self.max_length,
                                                    batch_size=self.batch_size, max_tokens=batching.max_tokens,
                                                    prepare=engine.prepare, depth=batching.prefetch_depth,
                                                    slice_size=batching.slices(engine.accelerated, len(texts)),
                                                    on_slice=count):
                    vectors = engine.run(features, task, extras)
                    if engine.asynchronous:
                        pending.append((idx, vectors))
                    else:
                        out[idx] = vectors
                    bar.update(len(idx))
                engine.synchronize()
            for idx, vectors in pending:
                out[idx] = vectors
        if bar is not progress:
            bar.close()
        return Encoding(out, truncated if counted else None)
