"""``Encoder``: texts -> float32 vectors with any sentence-transformers or Hugging Face model.

Batches are formed from texts sorted by token length (less padding than sorting by characters,
which is what ``SentenceTransformer.encode`` does), run under ``torch.inference_mode`` and in fp16
on GPU. Queries and documents get the model's own ``query`` / ``document`` prompts when it defines
them (as in E5 or BGE models).

``backend="onnx"`` runs the same batches through ONNX Runtime (:mod:`retrieval.backend`): the model
is exported once (cached per model fingerprint, parity-checked against torch), pooling and
normalization run inside the graph, and ``int8=True`` uses the dynamically quantized graph. An fp32
ONNX encoder has the torch encoder's fingerprint (its vectors match within 1e-4, so either can
search the other's index); an int8 encoder has a fingerprint of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.backend import BACKENDS, check_backend
from retrieval.backend.sources import DOC_PROMPTS, model_fingerprint
from retrieval.errors import InputError
from retrieval.models import DEFAULT_ENCODER, resolve_model

__all__ = ["BACKENDS", "DOC_PROMPTS", "Encoder", "model_fingerprint"]


class Encoder:
    """A bi-encoder: ``encode_queries(texts)`` / ``encode_docs(texts)`` -> ``float32 [n, dim]``.

    ``model`` is a sentence-transformers or Hugging Face model name or a local path (a plain
    Hugging Face model gets mean pooling, as sentence-transformers gives it). Embeddings are
    L2-normalised when the model's similarity is cosine, so inner product is cosine.
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        backend: str = "torch",
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        int8: bool = False,
    ) -> None:
        self.backend, self.int8 = check_backend(backend, int8)
        self.name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        if self.backend == "onnx":
            self._init_onnx(device, max_length)
        else:
            self._init_torch(device, max_length)

    def _init_torch(self, device: str | None, max_length: int | None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(self.path, device=device)
        except OSError as err:
            raise InputError(f"cannot load encoder: {str(err).splitlines()[0]}", path=self.path) from None
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.similarity = self.model.similarity_fn_name or "cosine"
        if self.similarity not in ("cosine", "dot", "euclidean"):
            raise InputError(f"similarity {self.similarity!r} has no FAISS metric", path=self.path, field="similarity_fn_name")
        self._fingerprint = model_fingerprint(self.model)
        if self.model.device.type == "cuda":
            self.model.half()
        self.model.eval()
        self._torch = torch
        self.tokenizer = getattr(self.model, "tokenizer", None)
        prompts = self.model.prompts or {}
        self.query_prompt = prompts.get("query")
        self.doc_prompt = next((prompts[p] for p in DOC_PROMPTS if p in prompts), None)
        dim = self.model.get_embedding_dimension()
        assert dim is not None
        self._dim, self._max_length = int(dim), self.model.max_seq_length

    def _init_onnx(self, device: str | None, max_length: int | None) -> None:
        from transformers import AutoTokenizer

        from retrieval.backend.cache import exported
        from retrieval.backend.session import OnnxSession

        export = exported(self.name, "encoder", int8=self.int8, max_length=max_length)
        settings = export.settings
        if max_length is not None and max_length != settings["max_length"]:
            raise InputError(f"exported with max_length={settings['max_length']}, not {max_length}; export again",
                             path=export.folder, field="max_length")
        self.model = None
        self.export = export
        self.session = OnnxSession(export.file(self.int8), device=device, int8=self.int8)
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self.similarity = settings["similarity"]
        self.query_prompt, self.doc_prompt = settings["query_prompt"], settings["doc_prompt"]
        self._dim, self._max_length = int(settings["dim"]), settings["max_length"]
        self._fingerprint = settings["torch_fingerprint"]
        if self.int8:  # other vectors: never the torch encoder's fingerprint
            int8_sha = export.manifest["files"][export.file(True).name]["sha256"]
            self._fingerprint = hashlib.sha256(f"{self._fingerprint}:onnx-int8:{int8_sha}".encode()).hexdigest()

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights, tokenizer and pooling set-up: equal fingerprints give equal vectors."""
        return self._fingerprint

    @property
    def max_length(self) -> int | None:
        return self.model.max_seq_length if self.model is not None else self._max_length

    @property
    def index_key(self) -> str:
        """The fingerprint's short form plus the backend: what names a cached index of this encoder's vectors."""
        if self.backend == "torch":
            return self.fingerprint[:16]
        return f"{self.fingerprint[:16]}-onnx{'-int8' if self.int8 else ''}"

    def describe(self) -> dict[str, Any]:
        """What an index manifest records about the encoder that built it."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "similarity": self.similarity,
            "max_length": self.max_length,
            "backend": self.backend,
            "int8": self.int8,
        }

    def encode_queries(self, texts: Sequence[str], progress: Any = False) -> np.ndarray:
        """Encode queries (with the model's query prompt, if any)."""
        return self._encode(texts, self.query_prompt, progress, task="query")

    def encode_docs(self, texts: Sequence[str], progress: Any = False) -> np.ndarray:
        """Encode documents (with the model's document prompt, if any)."""
        return self._encode(texts, self.doc_prompt, progress, task="document")

    def count_truncated(self, texts: Sequence[str]) -> int | None:
        """How many of these documents (with the document prompt) are longer than ``max_length`` tokens
        (None: the model has no tokenizer to count with)."""
        from retrieval.batching import count_truncated, tokenize

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

    max_tokens: int | None = None  # padded tokens per batch (None: ``batch_size`` texts); see retrieval.batching
    truncated: int = 0  # texts longer than max_length tokens encoded so far (cut to it; counted exactly)
    prefetch_depth: int = 2  # batches prepared ahead in a background thread (0: none)

    def _encode(self, texts: Sequence[str], prompt: str | None, progress: Any, task: str = "document") -> np.ndarray:
        """Encode in length-sorted batches (:mod:`retrieval.batching`); ``progress`` is a bool or a tqdm bar to update.

        Each text is tokenized once; the ids give the sort and, padded, the model's inputs (prepared
        ahead in a background thread). ``task`` ("query" / "document") routes a sentence-transformers
        ``Router`` model (separate query and document encoders, e.g. ADORE's output) as
        ``encode_query`` / ``encode_document`` do; a model whose own ``preprocess`` gives other
        features than the shared path keeps its ``preprocess`` per batch.
        """
        from tqdm.auto import tqdm

        from retrieval.batching import count_truncated, prefetch, token_batches, tokenize

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bar = progress if hasattr(progress, "update") else tqdm(total=len(texts), desc="encoding", unit="text",
                                                                  disable=not progress, leave=False)
        tokenizer = self.tokenizer
        tok, extras = None, None
        if tokenizer is not None and callable(tokenizer):
            prefixed = [prompt + t for t in texts] if prompt else texts
            tok = tokenize(tokenizer, prefixed, max_length=self.max_length)
            self.truncated += count_truncated(tokenizer, tok, prefixed, max_length=self.max_length)
            extras = {} if self.backend == "onnx" else self._batch_extras(texts, tok, prompt, task)
        lengths = tok.lengths if tok is not None else self._token_lengths(texts, prompt)
        batches = token_batches(lengths, self.batch_size, self.max_tokens)
        if tok is None or extras is None:  # the model's own preprocess, per batch
            forward = self._forward_onnx if self.backend == "onnx" else self._forward_torch
            for idx in batches:
                out[idx] = forward([texts[i] for i in idx], prompt, task)
                bar.update(len(idx))
        elif self.backend == "onnx":
            for idx, features in prefetch(batches, lambda idx: (idx, tok.pad(idx)), self.prefetch_depth):
                out[idx] = self.session(features)
                bar.update(len(idx))
        else:
            self._encode_torch(tok, batches, extras, task, out, bar)
        if bar is not progress:
            bar.close()
        return out

    def _batch_extras(self, texts: list[str], tok: Any, prompt: str | None, task: str) -> dict[str, Any] | None:
        """The non-tensor entries of the model's features (e.g. ``modality``), or None when its own
        ``preprocess`` of the longest and shortest text differs from the shared path's padded ids."""
        torch = self._torch
        sample = sorted({int(np.argmax(tok.lengths)), int(np.argmin(tok.lengths))})
        reference = self.model.preprocess([texts[i] for i in sample], prompt=prompt, task=task)
        tensors = {k: v for k, v in reference.items() if isinstance(v, torch.Tensor)}
        mine = tok.pad(sample)
        if set(tensors) != set(mine) or not all(np.array_equal(tensors[k].numpy(), mine[k]) for k in mine):
            return None
        return {k: v for k, v in reference.items() if k not in tensors}

    def _encode_torch(self, tok: Any, batches: list[np.ndarray], extras: dict[str, Any], task: str,
                      out: np.ndarray, bar: Any) -> None:
        """The torch forward over prepared batches; on CUDA, pinned inputs and outputs, copied without a stall."""
        from retrieval.batching import as_tensors, prefetch, to_device

        torch = self._torch
        device = self.model.device
        cuda = device.type == "cuda"
        pending: list[tuple[np.ndarray, Any]] = []
        with torch.inference_mode():
            for idx, features in prefetch(batches, lambda idx: (idx, as_tensors(tok.pad(idx), pin=cuda)),
                                          self.prefetch_depth):
                emb = self.model({**to_device(features, device), **extras}, task=task)["sentence_embedding"].float()
                if self.similarity == "cosine":
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                if cuda:
                    host = torch.empty(emb.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(emb, non_blocking=True)
                    pending.append((idx, host))
                else:
                    out[idx] = emb.numpy()
                bar.update(len(idx))
            if pending:
                torch.cuda.synchronize(device)
                for idx, host in pending:
                    out[idx] = host.numpy()

    def _forward_torch(self, texts: list[str], prompt: str | None, task: str) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = self.model.preprocess(texts, prompt=prompt, task=task)
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            emb = self.model(features, task=task)["sentence_embedding"].float()
            if self.similarity == "cosine":
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            return emb.cpu().numpy()

    def _forward_onnx(self, texts: list[str], prompt: str | None, task: str) -> np.ndarray:
        from retrieval.backend.features import text_features

        prefixed = [prompt + t for t in texts] if prompt else texts
        return self.session(text_features(self.tokenizer, prefixed, self._max_length))
