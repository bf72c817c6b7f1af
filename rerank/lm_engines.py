"""Causal-LM engines: the forward passes :class:`rankwise.rerank.llm.CausalLM` runs, one class per backend.

:class:`rankwise.rerank.llm.CausalLM` keeps prompts, tokenization and batching (token ids per prompt,
batches of prompt indices, the shared-prefix group arrays); its engine turns them into logits:

- ``next_token_logits(sequences, token_ids)``: ``[len(sequences), len(token_ids)]`` float32 logits
  of the token after each (unpadded) id sequence of one batch, all the vocabulary when ``token_ids``
  is None;
- ``tail_logits(input_ids, positions, allowed, ends, last)``: the logits at the last ``last``
  positions of every tail of one shared-prefix batch (:meth:`rankwise.rerank.llm.CausalLM.iter_tail_logits`);
- ``generate(sequences, max_new_tokens)``: the greedy new token ids of each sequence of one batch.

:class:`TorchLMEngine` runs the Hugging Face model (fp16 on CUDA); :class:`OnnxLMEngine` the exported
graph that takes the attention mask per query position and returns the logits only at the positions
and token ids asked for (:mod:`rankwise.rerank.onnx`), and :class:`OpenVinoLMEngine` the same graph compiled
by OpenVINO in bfloat16; :class:`rankwise.rerank.served.ServedLMEngine`
asks an OpenAI-compatible server (vLLM, SGLang, llama.cpp, a hosted API) for log-probabilities and
greedy continuations. :func:`lm_engine` is the one place a backend value picks the class (as
:mod:`rankwise.retrieval.engines` does for encoders and cross-encoders).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rankwise.retrieval.backend.kind import ModelKind
from rankwise.retrieval.backend.value import OPENVINO_BF16, TORCH, Backend
from rankwise.retrieval.errors import InputError

CPU_BATCH_TOKENS = 4096  # on the CPU, torch batches hold at most this many padded tokens


class TorchLMEngine:
    """A Hugging Face causal LM (or a GGUF file, dequantized) run by torch: fp32 on the CPU, fp16 on CUDA."""

    backend = TORCH
    session = None
    export = None
    shared_prefix = True  # CausalLM.iter_tail_logits reads the tails of a shared prefix in one pass
    batch_size: int | None = None  # no limit of its own on prompts per batch

    def __init__(self, path: str, *, gguf_file: str | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load a causal LM: {str(err).splitlines()[0]}", path=path) from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            self.model.half()
        self.model.to(self.device).eval()
        # a padded batch sends torch's attention down its masked path: on 2 Xeon cores, 20 FIRST windows
        # took 116 s in batches of 4 and 86 s one at a time, while 300-token pointwise prompts batched
        # ran 10% faster (BENCHMARKS.md)
        self.batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else None
        self._torch = torch

    def _features(self, sequences: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Left-padded features on the device, with position ids counting from each sequence's first real token."""
        features = self.tokenizer.pad({"input_ids": [list(s) for s in sequences]}, return_tensors="pt")
        features["position_ids"] = (features["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return {k: v.to(self.device) for k, v in features.items()}

    def next_token_logits(self, sequences: Sequence[Sequence[int]], token_ids: Sequence[int] | None) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(**self._features(sequences), logits_to_keep=1).logits[:, -1, :].float()
            if token_ids is not None:
                logits = logits.index_select(1, torch.tensor(list(token_ids), device=self.device))
            return logits.cpu().numpy()

    def tail_logits(self, input_ids: np.ndarray, positions: np.ndarray, allowed: np.ndarray,
                    ends: list[list[int]], last: int) -> list[list[np.ndarray]]:
        torch = self._torch
        width = input_ids.shape[1]
        keep = width - min(min(row) - last + 1 for row in ends)  # logits from the first position read
        dtype = self.model.dtype
        allowed_t = torch.from_numpy(allowed)
        mask = torch.zeros(allowed_t.shape, dtype=dtype).masked_fill(~allowed_t, torch.finfo(dtype).min)
        with torch.inference_mode():
            logits = self.model(input_ids=torch.from_numpy(input_ids).to(self.device),
                                attention_mask=mask[:, None].to(self.device),
                                position_ids=torch.from_numpy(positions).to(self.device), logits_to_keep=keep).logits
            offset = width - keep
            return [[logits[b, end - offset - last + 1:end - offset + 1].float().cpu().numpy() for end in row]
                    for b, row in enumerate(ends)]

    def generate(self, sequences: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """``model.generate`` greedily, the batch left-padded."""
        with self._torch.inference_mode():
            features = {k: v for k, v in self._features(sequences).items() if k != "position_ids"}
            ids = self.model.generate(**features, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            return [row.tolist() for row in ids[:, features["input_ids"].shape[1]:]]


class OnnxLMEngine:
    """The exported causal-LM graph run by ONNX Runtime (fp32, or int8 with SmoothQuant).

    On the CPU it takes one prompt at a time (``batch_size = 1``): the attention runs in query chunks
    only for a batch of one (:mod:`rankwise.rerank.onnx.chunked_attention`), batching long prompts buys no
    speed there, and int8 quantizes activations with one scale per batch, so a prompt's logits would
    depend on the prompts padded beside it (FIRST nDCG@10 on 20 SciFact queries: 0.6921 in batches of
    4 against 0.7090 one at a time, torch 0.7068). :meth:`generate` decodes with one full pass per
    new token (the graph keeps no KV cache).
    """

    model = None
    shared_prefix = True
    device = None
    batch_tokens = None

    def __init__(self, name: str, backend: Backend, *, device: str | None = None) -> None:
        from rankwise.rerank.onnx.chunked_attention import chunk_prompt_attention
        from rankwise.retrieval.backend.cache import exported
        from rankwise.retrieval.backend.session import OnnxSession

        self.backend = backend
        self.export = exported(name, CAUSAL_LM, backend)
        self.session = OnnxSession(self.export.file(backend), device=device, backend=backend,
                                   rewrite=chunk_prompt_attention)
        self.batch_size = 1 if self.session.provider == "CPUExecutionProvider" else None
        self._read_export()

    def _read_export(self) -> None:
        """The tokenizer, vocabulary and end-of-sequence ids of :attr:`export`."""
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.export.folder)
        self.vocab = np.arange(self.export.settings["vocab_size"], dtype=np.int64)
        self.eos = set(self.export.settings["eos_token_ids"])

    def _logits(self, sequences: Sequence[Sequence[int]], token_ids: np.ndarray) -> np.ndarray:
        from rankwise.rerank.onnx.features import prompt_features

        feed = prompt_features(sequences, self.tokenizer.pad_token_id)
        feed["token_ids"] = token_ids
        return self.session(feed)[:, 0, :]

    def next_token_logits(self, sequences: Sequence[Sequence[int]], token_ids: Sequence[int] | None) -> np.ndarray:
        cols = self.vocab if token_ids is None else np.asarray(list(token_ids), dtype=np.int64)
        return self._logits(sequences, cols)

    def tail_logits(self, input_ids: np.ndarray, positions: np.ndarray, allowed: np.ndarray,
                    ends: list[list[int]], last: int) -> list[list[np.ndarray]]:
        reads = [[p for end in row for p in range(end - last + 1, end + 1)] for row in ends]
        gather = np.zeros((len(reads), max(len(r) for r in reads)), dtype=np.int64)
        for b, row in enumerate(reads):
            gather[b, :len(row)] = row
        logits = self.session({"input_ids": input_ids, "allowed": allowed, "position_ids": positions,
                               "positions": gather, "token_ids": self.vocab})
        return [[logits[b, k * last:(k + 1) * last] for k in range(len(row))] for b, row in enumerate(ends)]

    def generate(self, sequences: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding: one full pass per new token (no KV cache), unfinished rows only."""
        seqs = [list(s) for s in sequences]
        new: list[list[int]] = [[] for _ in seqs]
        live = list(range(len(seqs)))
        for _ in range(max_new_tokens):
            if not live:
                break
            picks = self._logits([seqs[r] for r in live], self.vocab).argmax(-1)
            for r, token in zip(live, picks.tolist()):
                new[r].append(token)
                seqs[r].append(token)
            live = [r for r in live if new[r][-1] not in self.eos]
        return new


class OpenVinoLMEngine(OnnxLMEngine):
    """The exported causal LM compiled by OpenVINO for the CPU, in bfloat16 (``openvino-bf16``).

    OpenVINO compiles the export's plain graph (the dynamo exporter's, without ONNX Runtime's
    ``GroupQueryAttention``: :func:`rankwise.retrieval.backend.openvino.plain_graph`) and fuses its attention
    itself; the graph, its checksum and its parity record (ranking agreement with torch, reported) join the
    export's manifest. Only bfloat16 is offered to the rerankers (:func:`lm_engine`): on the FIRST window
    benchmark OpenVINO fp32 and int8 weights are no faster than ONNX Runtime (BENCHMARKS.md). Prompts are
    batched as torch's on the CPU (at most :data:`CPU_BATCH_TOKENS` padded tokens).
    """

    batch_size = None
    batch_tokens = CPU_BATCH_TOKENS

    def __init__(self, name: str, backend: Backend, *, device: str | None = None) -> None:
        from rankwise.retrieval.backend.cache import exported, openvino_graph
        from rankwise.retrieval.backend.openvino import OpenVinoModel, check_runtime

        check_runtime(device, backend, instead="torch, onnx or onnx-int8")
        self.backend = backend
        graph, record = openvino_graph(exported(name, CAUSAL_LM), CAUSAL_LM, backend)
        self.export = record["export"]
        self.session = OpenVinoModel(graph, bf16=backend.bf16)
        self._read_export()


LMEngine = Any  # TorchLMEngine | OnnxLMEngine | OpenVinoLMEngine | rankwise.rerank.served.ServedLMEngine


def check_lm_backend(backend: Any) -> Any:
    """A causal LM's backend: a :class:`~rankwise.retrieval.backend.value.Backend` (parsed from its name), or
    a served model's :class:`rankwise.rerank.served.ServedConfig` (``"api"``: the default one)."""
    from rankwise.rerank.served import ServedConfig

    if backend == "api":
        return ServedConfig()
    if isinstance(backend, ServedConfig):
        return backend
    return Backend.parse(backend)


def lm_engine(backend: Any, model: str, path: str, *, gguf_file: str | None = None,
              device: str | None = None) -> LMEngine:
    """The causal-LM engine of one backend (``model``: the export's name, or the served model's;
    ``path`` and ``gguf_file``: what torch loads, and where a served model's tokenizer is read)."""
    backend = check_lm_backend(backend)
    if not isinstance(backend, Backend):
        from rankwise.rerank.served import ServedLMEngine

        return ServedLMEngine(model, path, gguf_file=gguf_file, config=backend)
    if backend.runtime == "onnx":
        return OnnxLMEngine(model, backend, device=device)
    if backend.runtime == "openvino":
        if backend != OPENVINO_BF16:  # kept only where it beats ONNX Runtime on the FIRST window (BENCHMARKS.md)
            raise InputError(f"backend {str(backend)!r} runs encoders and cross-encoders; causal LMs run on torch, "
                             f"onnx, onnx-int8, {OPENVINO_BF16} or api", field="backend")
        return OpenVinoLMEngine(model, backend, device=device)
    return TorchLMEngine(path, gguf_file=gguf_file, device=device)


def _prepare_causal_lm(model: str, max_length: int | None) -> Any:
    from rankwise.rerank.onnx.causal_lm import prepare_causal_lm  # torch.onnx only when exporting

    return prepare_causal_lm(model, max_length)


# the causal-LM kind (:class:`rankwise.retrieval.backend.kind.ModelKind`): its ONNX code in rankwise.rerank.onnx
CAUSAL_LM = ModelKind("causal-lm", _prepare_causal_lm, lm_engine)
