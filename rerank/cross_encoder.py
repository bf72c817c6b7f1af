"""Cross-encoder reranking: any sentence-transformers ``CrossEncoder`` or sequence-classification model.

Pairs from all queries are scored together, in batches of pairs sorted by token length (less
padding than ``CrossEncoder.predict``'s character-length sort), under ``torch.inference_mode``.
Scores are the raw logit (one label) or the relevant-minus-irrelevant logit (two labels); both are
monotone in the model's relevance probability. (Nogueira & Cho, 2019, "Passage Re-ranking with BERT".)

``backend="onnx"`` scores the same batches with ONNX Runtime (:mod:`rankwise.retrieval.backend`; the score is
computed inside the graph), ``"onnx-int8"`` with the dynamically quantized graph; ``"openvino"`` compiles the
same export with OpenVINO (``"openvino-bf16"``: in bfloat16), ``"openvino-int8"`` quantizes it with NNCF on
``calibration`` pairs (default: the bundled calibration set). The forward pass is the engine's
(:func:`rankwise.retrieval.engines.pair_engine`); tokenizing and batching are the reranker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.batching import BatchingConfig
from rankwise.retrieval.engines import pair_engine
from rankwise.retrieval.models import resolve_model
from rankwise.retrieval.progress import CostBar

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"


def init_cross_encoder(base: str, out: str | Path, *, seed: int = 0, max_length: int = 512) -> Path:
    """A one-label cross-encoder made from an encoder's weights (e.g. all-MiniLM-L6-v2); the head is new.

    This is the starting point for training a reranker; saved as a sentence-transformers
    CrossEncoder folder that :class:`CrossEncoderReranker` loads.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from rankwise.retrieval.files import plain_permissions

    torch.manual_seed(seed)
    model = CrossEncoder(resolve_model(base), num_labels=1, max_length=max_length, device="cpu")
    model.save(str(out))
    plain_permissions(out)  # safetensors writes 0600: the umask's permissions, as any other output
    return Path(out)


class CrossEncoderReranker(Reranker):
    """Pointwise reranking with a cross-encoder (query and document in one input, one score)."""

    name = "cross-encoder"

    def __init__(self, model: str = DEFAULT_CROSS_ENCODER, *, batch_size: int = 32, max_length: int | None = None,
                 backend: Backend | str = "torch", device: str | None = None,
                 calibration: Any = None, batching: BatchingConfig | None = None) -> None:
        super().__init__()
        self.backend = Backend.parse(backend)
        self.batching = batching or BatchingConfig()  # token budget, prefetch, slices (retrieval.batching)
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.engine = pair_engine(self.backend, model, self.path, device=device, max_length=max_length,
                                  calibration=calibration)

    # what the engine holds, read through the reranker as before the engines
    model = property(lambda self: self.engine.model, doc="The sentence-transformers CrossEncoder (torch), else None.")
    session = property(lambda self: self.engine.session, doc="The ONNX Runtime session (onnx), else None.")
    export = property(lambda self: self.engine.export, doc="The checked export (onnx), else None.")
    tokenizer = property(lambda self: self.engine.tokenizer)

    @property
    def max_length(self) -> int:
        return self.engine.max_length

    def score_pairs(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        """One score per ``(query, document)`` pair: tokenized once (:func:`rankwise.retrieval.batching.stream_batches`;
        on a GPU in slices, the next one while the model scores this one), scored in length-sorted batches
        prepared ahead of the model."""
        from rankwise.retrieval.batching import count_truncated, stream_batches, token_batches, tokenize

        pairs = list(pairs)
        if not pairs:
            return []
        queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
        self.stats.passages += len(pairs)
        scores = np.zeros(len(pairs), dtype=np.float64)
        engine = self.engine
        chars = [len(q) + len(d) for q, d in pairs]  # the check: the longest and the shortest pair
        sample = sorted({int(np.argmax(chars)), int(np.argmin(chars))})
        extras = engine.extras([pairs[i] for i in sample],
                               tokenize(self.tokenizer, [queries[i] for i in sample], [docs[i] for i in sample],
                                        max_length=self.max_length))

        def count(tok: Any, start: int) -> None:  # pairs cut to max_length, counted exactly
            end = start + len(tok)
            self.stats.truncated += count_truncated(self.tokenizer, tok, queries[start:end], docs[start:end],
                                                    self.max_length)

        with CostBar(total=len(pairs), desc="cross-encoder reranking", unit="pair", disable=not progress, leave=False) as bar:
            if extras is None:  # the model's own preprocess, per batch
                tok = tokenize(self.tokenizer, queries, docs, max_length=self.max_length)
                count(tok, 0)
                for idx in token_batches(tok.lengths, self.batch_size, self.batching.max_tokens):
                    scores[idx] = engine.forward_pairs([pairs[i] for i in idx])
                    self.stats.forward_passes += 1
                    bar.update(len(idx))
                return scores.tolist()
            batching = self.batching
            for idx, features in stream_batches(self.tokenizer, queries, docs, max_length=self.max_length,
                                                batch_size=self.batch_size, max_tokens=batching.max_tokens,
                                                prepare=engine.prepare, depth=batching.prefetch_depth,
                                                slice_size=batching.slices(engine.accelerated, len(pairs)),
                                                on_slice=count):
                scores[idx] = engine.run(features, extras)
                self.stats.forward_passes += 1
                bar.update(len(idx))
        return scores.tolist()

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        pairs = [(q, d) for q, docs in lists for d in docs]
        self.stats.lists += len(lists)
        flat = self.score_pairs(pairs, progress)
        out, start = [], 0
        for _, docs in lists:
            out.append(flat[start:start + len(docs)])
            start += len(docs)
        return out
