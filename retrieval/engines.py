"""Engines: the object that runs a model's forward pass, one class per backend and model kind.

The backend (a :class:`rankwise.retrieval.backend.value.Backend`: ``torch``, ``onnx``, ``onnx-int8``,
``openvino``, ``openvino-int8``, ``openvino-bf16``) is read once, by a factory per kind
(:func:`encoder_engine`, :func:`pair_engine`; the causal LM's is
:func:`rankwise.rerank.lm_engines.lm_engine`), which picks the engine class. The model classes
(:class:`rankwise.retrieval.encoder.Encoder`, :class:`rankwise.rerank.cross_encoder.CrossEncoderReranker`,
:class:`rankwise.rerank.llm.CausalLM`) keep the data path -- prompts, tokenizing once, token-budget batches,
prefetch (:mod:`rankwise.retrieval.batching`) -- and hand each prepared batch to their engine:

- ``extras(...)``: the non-tensor entries the batches need (``{}``), or None when the model's own
  ``preprocess`` gives other features than the shared path (then ``forward_*`` runs per batch);
- ``prepare(tok, idx)``: a batch's inputs (padded NumPy arrays; CPU tensors, pinned for CUDA);
- ``run(features, ...)``: the forward pass, float32 NumPy out.

A torch engine on CUDA copies its outputs to pinned host memory without waiting
(``asynchronous``): its arrays are read after :meth:`TorchEncoderEngine.synchronize`.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import numpy as np

from rankwise.retrieval.backend.kind import ModelKind
from rankwise.retrieval.backend.value import TORCH, Backend
from rankwise.retrieval.backend.sources import DOC_PROMPTS, check_classification_head, model_fingerprint
from rankwise.retrieval.errors import InputError

__all__ = ["CROSS_ENCODER", "ENCODER", "OnnxEncoderEngine", "OnnxPairEngine", "OpenVinoEncoderEngine", "OpenVinoPairEngine", "TorchEncoderEngine",
           "TorchPairEngine", "encoder_engine", "pair_engine"]


def _preprocess_extras(tok: Any, preprocess: Any) -> dict[str, Any] | None:
    """The non-tensor entries of ``preprocess(sample)`` (the model's own features of the longest and the
    shortest input of ``tok``), or None when its tensors differ from the shared path's padded ids."""
    import torch

    sample = sorted({int(np.argmax(tok.lengths)), int(np.argmin(tok.lengths))})
    reference = preprocess(sample)
    tensors = {k: v for k, v in reference.items() if isinstance(v, torch.Tensor)}
    mine = tok.pad(sample)
    if set(tensors) != set(mine) or not all(np.array_equal(tensors[k].numpy(), mine[k]) for k in mine):
        return None
    return {k: v for k, v in reference.items() if k not in tensors}


# --- bi-encoders --------------------------------------------------------------------------------


class TorchEncoderEngine:
    """A sentence-transformers model run by torch (fp16 on CUDA, ``inference_mode``)."""

    backend = TORCH
    session = None
    export = None
    calibration: str | None = None  # the key of an openvino-int8 graph's calibration texts (others: None)
    index_suffix = ""  # what follows the fingerprint in the name of a cached index of these vectors

    def __init__(self, path: str, *, device: str | None = None, max_length: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(path, device=device)
        except OSError as err:
            raise InputError(f"cannot load encoder: {str(err).splitlines()[0]}", path=path) from None
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.similarity = self.model.similarity_fn_name or "cosine"
        if self.similarity not in ("cosine", "dot", "euclidean"):
            raise InputError(f"similarity {self.similarity!r} has no FAISS metric", path=path, field="similarity_fn_name")
        self.fingerprint = model_fingerprint(self.model)
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
        self.dim = int(dim)
        self.asynchronous = self.accelerated = self.model.device.type == "cuda"

    @property
    def max_length(self) -> int | None:
        return self.model.max_seq_length

    def extras(self, texts: list[str], tok: Any, prompt: str | None, task: str) -> dict[str, Any] | None:
        """The non-tensor entries of the model's features (e.g. ``modality``), or None when its own
        ``preprocess`` of the longest and shortest text differs from the shared path's padded ids."""
        return _preprocess_extras(tok, lambda sample: self.model.preprocess([texts[i] for i in sample], prompt=prompt,
                                                                            task=task))

    def prepare(self, tok: Any, idx: np.ndarray) -> dict[str, Any]:
        """Padded CPU tensors of texts ``idx`` (pinned when the model runs on CUDA)."""
        from rankwise.retrieval.batching import as_tensors

        return as_tensors(tok.pad(idx), pin=self.asynchronous)

    def inference(self) -> contextlib.AbstractContextManager:
        return self._torch.inference_mode()

    def _embed(self, features: dict[str, Any], task: str) -> Any:
        emb = self.model(features, task=task)["sentence_embedding"].float()
        if self.similarity == "cosine":
            emb = self._torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb

    def run(self, features: dict[str, Any], task: str, extras: dict[str, Any]) -> np.ndarray:
        """``float32 [n, dim]``; on CUDA a pinned host array still being copied (read after :meth:`synchronize`)."""
        from rankwise.retrieval.batching import to_device

        torch = self._torch
        emb = self._embed({**to_device(features, self.model.device), **extras}, task)
        if not self.asynchronous:
            return emb.numpy()
        host = torch.empty(emb.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(emb, non_blocking=True)
        return host.numpy()

    def synchronize(self) -> None:
        """Wait for the copies :meth:`run` started (CUDA)."""
        if self.asynchronous:
            self._torch.cuda.synchronize(self.model.device)

    def forward_texts(self, texts: list[str], prompt: str | None, task: str) -> np.ndarray:
        """Vectors through the model's own ``preprocess`` (the fallback of :meth:`extras`)."""
        with self._torch.inference_mode():
            features = self.model.preprocess(texts, prompt=prompt, task=task)
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            return self._embed(features, task).cpu().numpy()


class OnnxEncoderEngine:
    """An exported encoder graph (pooling and normalization inside) run by ONNX Runtime, fp32 or int8."""

    model = None
    asynchronous = False
    calibration: str | None = None

    def __init__(self, name: str, backend: Backend, *, device: str | None = None,
                 max_length: int | None = None) -> None:
        from transformers import AutoTokenizer

        from rankwise.retrieval.backend.cache import exported
        from rankwise.retrieval.backend.session import OnnxSession

        self.backend = backend
        self.index_suffix = f"-{self.backend}"
        export = exported(name, ENCODER, backend, max_length=max_length)
        settings = export.settings
        if max_length is not None and max_length != settings["max_length"]:
            raise InputError(f"exported with max_length={settings['max_length']}, not {max_length}; export again",
                             path=export.folder, field="max_length")
        self.export = export
        self.session = OnnxSession(export.file(backend), device=device, backend=backend)
        self.accelerated = self.session.provider == "CUDAExecutionProvider"  # the model runs off the CPU's cores
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self.similarity = settings["similarity"]
        self.query_prompt, self.doc_prompt = settings["query_prompt"], settings["doc_prompt"]
        self.dim, self.max_length = int(settings["dim"]), settings["max_length"]
        self.fingerprint = settings["torch_fingerprint"]
        if backend.int8:  # other vectors: never the torch encoder's fingerprint
            graph_sha = export.manifest["files"][export.file(backend).name]["sha256"]
            self.fingerprint = hashlib.sha256(f"{self.fingerprint}:{backend}:{graph_sha}".encode()).hexdigest()

    def extras(self, texts: list[str], tok: Any, prompt: str | None, task: str) -> dict[str, Any] | None:
        return {}  # the graph takes exactly the padded ids

    def prepare(self, tok: Any, idx: np.ndarray) -> dict[str, np.ndarray]:
        return tok.pad(idx)

    def inference(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def run(self, features: dict[str, Any], task: str, extras: dict[str, Any]) -> np.ndarray:
        return self.session(features)

    def synchronize(self) -> None:
        pass

    def forward_texts(self, texts: list[str], prompt: str | None, task: str) -> np.ndarray:
        from rankwise.retrieval.backend.features import text_features

        prefixed = [prompt + t for t in texts] if prompt else texts
        return self.session(text_features(self.tokenizer, prefixed, self.max_length))


class OpenVinoEncoderEngine(OnnxEncoderEngine):
    """The same export compiled by OpenVINO for the CPU: fp32, bf16 (bfloat16 inference), or int8 by NNCF static
    quantization on ``calibration`` (texts drawn from the collection being indexed; default: the bundled
    calibration texts; a string: the key of an int8 graph already made, as an index manifest records it)."""

    def __init__(self, name: str, backend: Backend, *, device: str | None = None, max_length: int | None = None,
                 calibration: Any = None) -> None:
        from transformers import AutoTokenizer

        from rankwise.retrieval.backend.cache import exported, openvino_graph
        from rankwise.retrieval.backend.calibration import bundled_texts
        from rankwise.retrieval.backend.openvino import OpenVinoModel, check_runtime, resolve_calibration

        check_runtime(device, backend)
        self.backend = backend
        export = exported(name, ENCODER, max_length=max_length)
        settings = export.settings
        if max_length is not None and max_length != settings["max_length"]:
            raise InputError(f"exported with max_length={settings['max_length']}, not {max_length}; export again",
                             path=export.folder, field="max_length")
        texts = resolve_calibration(calibration, bundled_texts) if backend.int8 else None
        graph, record = openvino_graph(export, ENCODER, backend, calibration=texts)
        self.export = record["export"]
        self.calibration = record["key"]  # the int8 graph's calibration key (None: fp32, bf16)
        self.session = OpenVinoModel(graph, bf16=backend.bf16)
        self.accelerated = False
        self.index_suffix = f"-{self.backend}"
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self.similarity = settings["similarity"]
        self.query_prompt, self.doc_prompt = settings["query_prompt"], settings["doc_prompt"]
        self.dim, self.max_length = int(settings["dim"]), settings["max_length"]
        self.fingerprint = settings["torch_fingerprint"]  # fp32: torch's vectors within 1e-4
        if backend.precision != "fp32":  # other vectors: never the torch encoder's fingerprint
            graph_file = record["files"][1] if backend.int8 else record["graph"]
            graph_sha = self.export.manifest["files"][graph_file]["sha256"]
            self.fingerprint = hashlib.sha256(f"{self.fingerprint}:{backend}:{graph_sha}".encode()).hexdigest()


EncoderEngine = TorchEncoderEngine | OnnxEncoderEngine | OpenVinoEncoderEngine


def encoder_engine(backend: Backend | str, model: str, path: str, *, device: str | None = None,
                   max_length: int | None = None, calibration: Any = None) -> EncoderEngine:
    """The encoder engine of one backend: ``model`` is the name an ONNX export is cached under,
    ``path`` its resolved folder (what torch loads); ``calibration`` is read only by ``openvino-int8``."""
    backend = Backend.parse(backend)
    if backend.runtime == "onnx":
        return OnnxEncoderEngine(model, backend, device=device, max_length=max_length)
    if backend.runtime == "openvino":
        return OpenVinoEncoderEngine(model, backend, device=device, max_length=max_length, calibration=calibration)
    return TorchEncoderEngine(path, device=device, max_length=max_length)


# --- cross-encoders -----------------------------------------------------------------------------


class TorchPairEngine:
    """A sentence-transformers ``CrossEncoder`` run by torch; the score is :func:`rankwise.retrieval.backend.graphs.pair_scores`."""

    backend = TORCH
    session = None
    export = None

    def __init__(self, path: str, *, device: str | None = None, max_length: int | None = None) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        check_classification_head(path)
        try:
            self.model = CrossEncoder(path, device=device, max_length=max_length)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load a cross-encoder: {str(err).splitlines()[0]}", path=path) from None
        if self.model.device.type == "cuda":
            self.model.half()
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self._torch = torch
        self.accelerated = self.model.device.type == "cuda"  # the model runs off the CPU's cores

    @property
    def max_length(self) -> int:
        return int(self.model.max_length)

    def extras(self, pairs: list[tuple[str, str]], tok: Any) -> dict[str, Any] | None:
        """The non-tensor entries of the model's features, or None when its own ``preprocess`` of the
        longest and shortest pair differs from the shared path's padded ids."""
        return _preprocess_extras(tok, lambda sample: self.model.preprocess([pairs[i] for i in sample]))

    def prepare(self, tok: Any, idx: np.ndarray) -> dict[str, Any]:
        from rankwise.retrieval.batching import as_tensors

        return as_tensors(tok.pad(idx), pin=self.model.device.type == "cuda")

    def run(self, features: dict[str, Any], extras: dict[str, Any]) -> np.ndarray:
        """One score per pair of the batch, ``float32 [n]``."""
        from rankwise.retrieval.backend.graphs import pair_scores
        from rankwise.retrieval.batching import to_device

        with self._torch.inference_mode():
            logits = self.model({**to_device(features, self.model.device), **extras})["scores"]
            return pair_scores(logits.float()).reshape(-1).cpu().numpy()

    def forward_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Scores through the model's own ``preprocess`` (the fallback of :meth:`extras`)."""
        from rankwise.retrieval.backend.graphs import pair_scores

        with self._torch.inference_mode():
            features = self.model.preprocess(pairs)
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            return pair_scores(self.model(features)["scores"].float()).reshape(len(pairs)).cpu().tolist()


class OnnxPairEngine:
    """An exported cross-encoder graph (the score inside) run by ONNX Runtime, fp32 or int8."""

    model = None

    def __init__(self, name: str, backend: Backend, *, device: str | None = None,
                 max_length: int | None = None) -> None:
        from transformers import AutoTokenizer

        from rankwise.retrieval.backend.cache import exported
        from rankwise.retrieval.backend.session import OnnxSession

        self.backend = backend
        export = exported(name, CROSS_ENCODER, backend)
        self.export = export
        self.session = OnnxSession(export.file(backend), device=device, backend=backend)
        self.accelerated = self.session.provider == "CUDAExecutionProvider"
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self.max_length = int(max_length or export.settings["max_length"])  # the graph's axes are dynamic

    def extras(self, pairs: list[tuple[str, str]], tok: Any) -> dict[str, Any] | None:
        return {}

    def prepare(self, tok: Any, idx: np.ndarray) -> dict[str, np.ndarray]:
        return tok.pad(idx)

    def run(self, features: dict[str, Any], extras: dict[str, Any]) -> np.ndarray:
        return self.session(features).reshape(-1)

    def forward_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        from rankwise.retrieval.backend.features import text_features

        features = text_features(self.tokenizer, [q for q, _ in pairs], self.max_length, [d for _, d in pairs])
        return self.session(features).reshape(len(pairs)).tolist()


class OpenVinoPairEngine(OnnxPairEngine):
    """The same export compiled by OpenVINO for the CPU: fp32, bf16, or int8 by NNCF static quantization on
    ``calibration`` ``(query, document)`` pairs (default: every bundled calibration query with every
    bundled passage)."""

    def __init__(self, name: str, backend: Backend, *, device: str | None = None, max_length: int | None = None,
                 calibration: Any = None) -> None:
        from transformers import AutoTokenizer

        from rankwise.retrieval.backend.cache import exported, openvino_graph
        from rankwise.retrieval.backend.calibration import bundled_pairs
        from rankwise.retrieval.backend.openvino import OpenVinoModel, check_runtime, resolve_calibration

        check_runtime(device, backend)
        self.backend = backend
        pairs = resolve_calibration(calibration, bundled_pairs) if backend.int8 else None
        graph, record = openvino_graph(exported(name, CROSS_ENCODER), CROSS_ENCODER, backend, calibration=pairs)
        self.export = record["export"]
        self.calibration = record["key"]
        self.session = OpenVinoModel(graph, bf16=backend.bf16)
        self.accelerated = False
        self.tokenizer = AutoTokenizer.from_pretrained(self.export.folder)
        self.max_length = int(max_length or self.export.settings["max_length"])


PairEngine = TorchPairEngine | OnnxPairEngine | OpenVinoPairEngine


def pair_engine(backend: Backend | str, model: str, path: str, *, device: str | None = None,
                max_length: int | None = None, calibration: Any = None) -> PairEngine:
    """The cross-encoder engine of one backend (``model``: the export's name; ``path``: torch's folder;
    ``calibration``: read only by ``openvino-int8``)."""
    backend = Backend.parse(backend)
    if backend.runtime == "onnx":
        return OnnxPairEngine(model, backend, device=device, max_length=max_length)
    if backend.runtime == "openvino":
        return OpenVinoPairEngine(model, backend, device=device, max_length=max_length, calibration=calibration)
    return TorchPairEngine(path, device=device, max_length=max_length)


# --- the model kinds (:class:`rankwise.retrieval.backend.kind.ModelKind`) ------------------------


def _prepare_encoder(model: str, max_length: int | None) -> Any:
    from rankwise.retrieval.backend.build import prepare_encoder  # torch.onnx only when exporting

    return prepare_encoder(model, max_length)


def _prepare_cross_encoder(model: str, max_length: int | None) -> Any:
    from rankwise.retrieval.backend.build import prepare_cross_encoder

    return prepare_cross_encoder(model, max_length)


ENCODER = ModelKind("encoder", _prepare_encoder, encoder_engine)
CROSS_ENCODER = ModelKind("cross-encoder", _prepare_cross_encoder, pair_engine)
