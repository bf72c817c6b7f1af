"""Cross-encoder reranking: any sentence-transformers ``CrossEncoder`` or sequence-classification model.

Pairs from all queries are scored together, in batches of pairs sorted by token length (less
padding than ``CrossEncoder.predict``'s character-length sort), under ``torch.inference_mode``.
Scores are the raw logit (one label) or the relevant-minus-irrelevant logit (two labels); both are
monotone in the model's relevance probability. (Nogueira & Cho, 2019, "Passage Re-ranking with BERT".)

``backend="onnx"`` scores the same batches with ONNX Runtime (:mod:`retrieval.backend`; the score is
computed inside the graph), ``int8=True`` with the dynamically quantized graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank.base import Reranker
from retrieval.backend import check_backend
from retrieval.backend.sources import check_classification_head
from retrieval.errors import InputError
from retrieval.models import resolve_model

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"


def init_cross_encoder(base: str, out: str | Path, *, seed: int = 0, max_length: int = 512) -> Path:
    """A one-label cross-encoder made from an encoder's weights (e.g. all-MiniLM-L6-v2); the head is new.

    This is the starting point for training a reranker; saved as a sentence-transformers
    CrossEncoder folder that :class:`CrossEncoderReranker` loads.
    """
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    model = CrossEncoder(resolve_model(base), num_labels=1, max_length=max_length, device="cpu")
    model.save(str(out))
    return Path(out)


class CrossEncoderReranker(Reranker):
    """Pointwise reranking with a cross-encoder (query and document in one input, one score)."""

    name = "cross-encoder"

    def __init__(self, model: str = DEFAULT_CROSS_ENCODER, *, batch_size: int = 32, max_length: int | None = None,
                 backend: str = "torch", device: str | None = None, int8: bool = False) -> None:
        super().__init__()
        self.backend, self.int8 = check_backend(backend, int8)
        backend = self.backend
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        if backend == "onnx":
            self._init_onnx(device, max_length)
        else:
            self._init_torch(device, max_length)

    def _init_torch(self, device: str | None, max_length: int | None) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        check_classification_head(self.path)
        try:
            self.model = CrossEncoder(self.path, device=device, max_length=max_length)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=self.path) from None
        if self.model.device.type == "cuda":
            self.model.half()
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self._torch = torch

    def _init_onnx(self, device: str | None, max_length: int | None) -> None:
        from transformers import AutoTokenizer

        from retrieval.backend.cache import exported
        from retrieval.backend.session import OnnxSession

        export = exported(self.model_name, "cross-encoder", int8=self.int8)
        self.model = None
        self.export = export
        self.session = OnnxSession(export.file(self.int8), device=device, int8=self.int8)
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self._max_length = max_length or export.settings["max_length"]  # the graph's axes are dynamic

    @property
    def max_length(self) -> int:
        return int(self.model.max_length) if self.model is not None else int(self._max_length)

    max_tokens: int | None = None  # padded tokens per batch (None: ``batch_size`` pairs); see retrieval.batching
    prefetch_depth: int = 2  # batches prepared ahead in a background thread (0: none)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], progress: bool = False) -> list[float]:
        """One score per ``(query, document)`` pair: tokenized once (:mod:`retrieval.batching`), scored in
        length-sorted batches prepared ahead of the model."""
        from tqdm.auto import tqdm

        from retrieval.batching import as_tensors, count_truncated, prefetch, to_device, token_batches, tokenize

        pairs = list(pairs)
        if not pairs:
            return []
        queries, docs = [q for q, _ in pairs], [d for _, d in pairs]
        tok = tokenize(self.tokenizer, queries, docs, max_length=self.max_length)
        self.stats.truncated += count_truncated(self.tokenizer, tok, queries, docs, self.max_length)
        self.stats.passages += len(pairs)
        scores = np.zeros(len(pairs), dtype=np.float64)
        batches = token_batches(tok.lengths, self.batch_size, self.max_tokens)
        extras = {} if self.backend == "onnx" else self._batch_extras(pairs, tok)
        cuda = self.model is not None and self.model.device.type == "cuda"

        def prepare(idx: np.ndarray) -> tuple[np.ndarray, dict]:
            features = tok.pad(idx)
            return idx, (features if self.backend == "onnx" else as_tensors(features, pin=cuda))

        with tqdm(total=len(pairs), desc="cross-encoder", unit="pair", disable=not progress, leave=False) as bar:
            if extras is None:  # the model's own preprocess, per batch
                for idx in batches:
                    scores[idx] = self._forward_torch([pairs[i] for i in idx])
                    self.stats.forward_passes += 1
                    bar.update(len(idx))
                return scores.tolist()
            for idx, features in prefetch(batches, prepare, self.prefetch_depth):
                if self.backend == "onnx":
                    scores[idx] = self.session(features).reshape(len(idx))
                else:
                    from retrieval.backend.graphs import pair_scores

                    with self._torch.inference_mode():
                        logits = self.model({**to_device(features, self.model.device), **extras})["scores"]
                        scores[idx] = pair_scores(logits.float()).reshape(len(idx)).cpu().numpy()
                self.stats.forward_passes += 1
                bar.update(len(idx))
        return scores.tolist()

    def _batch_extras(self, pairs: list[tuple[str, str]], tok: Any) -> dict[str, Any] | None:
        """The non-tensor entries of the model's features, or None when its own ``preprocess`` of the
        longest and shortest pair differs from the shared path's padded ids."""
        torch = self._torch
        sample = sorted({int(np.argmax(tok.lengths)), int(np.argmin(tok.lengths))})
        reference = self.model.preprocess([pairs[i] for i in sample])
        tensors = {k: v for k, v in reference.items() if isinstance(v, torch.Tensor)}
        mine = tok.pad(sample)
        if set(tensors) != set(mine) or not all(np.array_equal(tensors[k].numpy(), mine[k]) for k in mine):
            return None
        return {k: v for k, v in reference.items() if k not in tensors}

    def _forward_torch(self, pairs: list[tuple[str, str]]) -> list[float]:
        from retrieval.backend.graphs import pair_scores

        with self._torch.inference_mode():
            features = self.model.preprocess(pairs)
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            return pair_scores(self.model(features)["scores"].float()).reshape(len(pairs)).cpu().tolist()

    def _forward_onnx(self, pairs: list[tuple[str, str]]) -> list[float]:
        from retrieval.backend.features import text_features

        features = text_features(self.tokenizer, [q for q, _ in pairs], self.max_length, [d for _, d in pairs])
        return self.session(features).reshape(len(pairs)).tolist()

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        pairs = [(q, d) for q, docs in lists for d in docs]
        self.stats.lists += len(lists)
        flat = self.score_pairs(pairs, progress)
        out, start = [], 0
        for _, docs in lists:
            out.append(flat[start:start + len(docs)])
            start += len(docs)
        return out
