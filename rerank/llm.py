"""``CausalLM``: the one place causal LMs are loaded and prompted for the LLM rerankers.

Loads a Hugging Face folder, a hub name (``$RANKWISE_MODELS`` mirror first) or a GGUF file
(``transformers``' ``gguf_file=``, dequantized to float), applies the model's own chat template
when it has one, and reads next-token logits in batches sorted by length with left padding (only
the last position's logits are computed). The pointwise-LLM, listwise (FIRST) and groupwise
rerankers all go through it, so the inference backend has one seam: its engine
(:mod:`rankwise.rerank.lm_engines`), picked once from the ``backend`` value.

Besides plain prompts it runs *shared-prefix* sequences (:meth:`CausalLM.iter_tail_logits`): one
context followed by several short tails, each of which sees the context and itself but no other
tail (a 4-D attention mask and position ids that continue from the context), so the logits at
each tail equal those of the separate prompt ``context + tail`` at the cost of one pass.

``backend="onnx"`` runs every method on ONNX Runtime (:class:`rankwise.rerank.lm_engines.OnnxLMEngine`): the exported
graph takes the attention mask per query position and returns the logits only at the positions and
token ids asked for, which serves :meth:`next_token_logits` and :meth:`iter_tail_logits` alike;
:meth:`generate` decodes greedily with one full pass per new token (the graph keeps no KV cache, so
it is slower than torch's ``generate``: use ``mode="first"`` listwise reranking with ONNX).
``"onnx-int8"`` uses the dynamically quantized graph, one prompt at a time on the CPU (its activation
scales are per batch). ``"openvino-bf16"`` runs the same export's plain graph with OpenVINO in bfloat16 on CPUs
with AMX or AVX512-BF16 (:class:`rankwise.rerank.lm_engines.OpenVinoLMEngine`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from rankwise.rerank.lm_engines import CPU_BATCH_TOKENS, check_lm_backend, lm_engine  # noqa: F401 - re-exported
from rankwise.retrieval.backend.value import TORCH, Backend
from rankwise.retrieval.backend.sources import gguf_location
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import resolve_model



class CausalLM:
    """A causal LM with its tokenizer, ready for ranking prompts; the forward passes are its engine's
    (:func:`rankwise.rerank.lm_engines.lm_engine`)."""

    def __init__(self, model: str, *, backend: Any = "torch", device: str | None = None, batch_size: int = 4,
                 max_length: int = 4096) -> None:
        runtime = check_lm_backend(backend)
        self.backend = runtime if isinstance(runtime, Backend) else "api"
        self.name = model
        self.path, self.gguf_file = gguf_location(resolve_model(model))
        self.max_length = max_length
        self.engine = lm_engine(runtime, model, self.path, gguf_file=self.gguf_file, device=device)
        self.batch_size = self.engine.batch_size or batch_size
        self.batch_tokens: int | None = self.engine.batch_tokens  # most padded tokens in one batch (None: no limit)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # what the engine holds, read through the model as before the engines
    tokenizer = property(lambda self: self.engine.tokenizer)
    model = property(lambda self: self.engine.model, doc="The Hugging Face model (torch), else None.")
    device = property(lambda self: self.engine.device, doc="The torch device (torch), else None.")
    export = property(lambda self: self.engine.export, doc="The checked export (onnx), else None.")

    session = property(lambda self: self.engine.session, doc="The ONNX Runtime session (onnx), else None.")

    def without_model(self) -> "CausalLM":
        """A copy with the tokenizer and settings but no model or session: what a process that only
        tokenizes prompts needs (a training DataLoader worker), cheap to pickle."""
        lm = copy.copy(self)
        engine = self.engine
        lm.engine = SimpleNamespace(tokenizer=engine.tokenizer, model=None, session=None, export=None, device=None,
                                    batch_size=engine.batch_size, batch_tokens=engine.batch_tokens,
                                    shared_prefix=engine.shared_prefix)
        return lm

    # --- prompts ------------------------------------------------------------------------------

    def chat(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        """The prompt text for one user turn, with the model's chat template when it has one."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = (f"{system}\n\n" if system else "") + f"{user}\n\nAnswer: "
        return text + assistant_prefix

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to ``max_tokens`` tokens, and whether it was cut."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_tokens:
            return text, False
        return self.tokenizer.decode(ids[:max_tokens]), True

    def single_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The token id of each label; a label that is not exactly one token is an error."""
        ids = []
        for label in labels:
            tokens = self.tokenizer.encode(label, add_special_tokens=False)
            if len(tokens) != 1:
                raise InputError(f"label {label!r} is {len(tokens)} tokens for this tokenizer, not one",
                                 path=self.path, field="labels")
            ids.append(tokens[0])
        return ids

    # --- inference ----------------------------------------------------------------------------

    def _encode(self, prompts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """``(token ids per prompt, batches of prompt indices)``: batches of ``batch_size``, longest first,
        of at most :attr:`batch_tokens` padded tokens when that is set (:mod:`rankwise.retrieval.batching`: tokenized
        once, :func:`~retrieval.batching.token_batches`)."""
        from rankwise.retrieval.batching import token_batches, tokenize

        tok = tokenize(self.tokenizer, list(prompts), add_special_tokens=False)  # the shared data path, untruncated
        encoded = tok.ids["input_ids"]
        too_long = np.flatnonzero(tok.lengths > self.max_length)
        if len(too_long):
            raise InputError(f"a prompt of {tok.lengths[too_long[0]]} tokens exceeds max_length={self.max_length}",
                             field="max_length")
        batches = [b.tolist() for b in token_batches(tok.lengths, self.batch_size, self.batch_tokens)]
        return encoded, batches

    def _progress(self, progress: Any, total: int, desc: str, unit: str = "prompt") -> Any:
        from rankwise.retrieval.progress import CostBar

        return progress if hasattr(progress, "update") else CostBar(total=total, desc=desc, unit=unit,
                                                                 disable=not progress, leave=False)

    def next_token_logits(self, prompts: Sequence[str], token_ids: Sequence[int] | None = None,
                          progress: Any = False) -> np.ndarray:
        """Logits of the next token after each prompt: ``[len(prompts), len(token_ids) or vocab]`` float32."""
        if not len(prompts):
            return np.empty((0, 0), dtype=np.float32)
        encoded, batches = self._encode(prompts)
        out: np.ndarray | None = None
        bar = self._progress(progress, len(prompts), f"LLM ({self.engine.backend})")
        for idx in batches:
            values = self.engine.next_token_logits([encoded[i] for i in idx], token_ids)
            if out is None:
                out = np.empty((len(prompts), values.shape[1]), dtype=np.float32)
            out[idx] = values
            bar.update(len(idx))
        if bar is not progress:
            bar.close()
        assert out is not None
        return out

    def split_common_prefix(self, prompts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """``(context ids, tail ids per prompt)``: the prompts tokenized whole, cut at their longest common
        token prefix (each tail keeps at least one token), so ``context + tail`` is exactly each prompt's tokens."""
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        c = 0
        while c < min(len(x) for x in ids) - 1 and all(x[c] == ids[0][c] for x in ids):
            c += 1
        return list(ids[0][:c]), [list(x[c:]) for x in ids]

    def _group_batch(self, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], chunk: list[int],
                     sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
        """``(input_ids, position ids, allowed [b, t, t], each tail's last position per row)`` for a chunk of groups.

        Left-padded; the context attends causally to itself; each tail to the context and causally
        to itself; positions of a tail continue from the end of its context; padding attends to itself.
        """
        width = max(sizes[g] for g in chunk)
        input_ids = np.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=np.int64)
        positions = np.zeros((len(chunk), width), dtype=np.int64)
        allowed = np.zeros((len(chunk), width, width), dtype=bool)
        allowed[:, np.arange(width), np.arange(width)] = True
        ends: list[list[int]] = []
        for b, g in enumerate(chunk):
            ctx, tails = groups[g]
            begin = at = width - sizes[g]
            input_ids[b, at:at + len(ctx)] = list(ctx)
            positions[b, at:at + len(ctx)] = np.arange(len(ctx))
            allowed[b, at:at + len(ctx), at:at + len(ctx)] = np.tril(np.ones((len(ctx), len(ctx)), dtype=bool))
            at += len(ctx)
            row = []
            for tail in tails:
                t = len(tail)
                input_ids[b, at:at + t] = list(tail)
                positions[b, at:at + t] = len(ctx) + np.arange(t)
                allowed[b, at:at + t, begin:begin + len(ctx)] = True
                allowed[b, at:at + t, at:at + t] = np.tril(np.ones((t, t), dtype=bool))
                row.append(at + t - 1)
                at += t
            ends.append(row)
        return input_ids, positions, allowed, ends

    def iter_tail_logits(self, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], last: int = 1,
                         progress: Any = False) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Next-token logits at the last ``last`` positions of every tail, one forward pass per group.

        ``groups``: ``(context ids, [tail ids, ...])``. Yields ``(group index, [array [last, vocab]
        float32 per tail])`` -- row ``-1`` is the logits after the tail's last token, row ``-2`` after
        the one before it -- equal (up to float rounding) to :meth:`next_token_logits` of the separate
        prompts ``context + tail``. The context attends causally to itself; each tail attends to the
        context and causally to itself, never to another tail, and its positions continue from the
        end of the context. Groups go ``batch_size`` at a time, longest first, left-padded.
        """
        sizes = [len(ctx) + sum(len(t) for t in tails) for ctx, tails in groups]
        for (ctx, tails), n in zip(groups, sizes):
            if n > self.max_length:
                raise InputError(f"a group of {n} tokens (context and tails) exceeds max_length={self.max_length}",
                                 field="max_length")
            if any(len(t) < last for t in tails):
                raise InputError(f"every tail needs at least {last} tokens", field="tails")
        if not self.engine.shared_prefix:
            yield from self._separate_tail_logits(groups, last, progress)
            return
        order = sorted(range(len(groups)), key=lambda g: -sizes[g])
        bar = self._progress(progress, len(groups), "LLM groups", unit="group")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            input_ids, positions, allowed, ends = self._group_batch(groups, chunk, sizes)
            yield from zip(chunk, self.engine.tail_logits(input_ids, positions, allowed, ends, last))
            bar.update(len(chunk))
        if bar is not progress:
            bar.close()

    def _separate_tail_logits(self, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], last: int,
                              progress: Any) -> Iterator[tuple[int, list[np.ndarray]]]:
        """:meth:`iter_tail_logits` for an engine without shared-prefix passes (a served model): the
        prompt ``context + tail[:len(tail) - j]`` for each of the last ``last`` positions, all in one engine call."""
        seqs = [list(ctx) + list(tail[:len(tail) - j]) for ctx, tails in groups for tail in tails
                for j in range(last - 1, -1, -1)]
        logits = self.engine.next_token_logits(seqs, None)
        at = 0
        bar = self._progress(progress, len(groups), "LLM groups", unit="group")
        for g, (_, tails) in enumerate(groups):
            rows = []
            for _ in tails:
                rows.append(logits[at:at + last])
                at += last
            yield g, rows
            bar.update(1)
        if bar is not progress:
            bar.close()

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, progress: Any = False) -> list[str]:
        """Greedy continuations of each prompt (special tokens removed)."""
        texts: list[str] = [""] * len(prompts)
        if not len(prompts):
            return texts
        bar = self._progress(progress, len(prompts), "LLM generate")
        encoded, batches = self._encode(prompts)
        for idx in batches:
            for i, row in zip(idx, self.engine.generate([encoded[i] for i in idx], max_new_tokens)):
                texts[i] = self.tokenizer.decode(row, skip_special_tokens=True)
            bar.update(len(idx))
        if bar is not progress:
            bar.close()
        return texts


def load_lm(model: Any, *, backend: Any = "torch", batch_size: int = 4) -> Any:
    """The :class:`CausalLM` an LLM reranker runs: ``model`` loaded with ``backend`` (``torch``, ``onnx``,
    ``onnx-int8``, or a served model: ``"api"`` or a :class:`rankwise.rerank.served.ServedConfig`) when it
    is a name or path, else ``model`` itself (a loaded CausalLM, or an object with its methods), which
    must then run the backend asked for, if one is."""
    runtime = check_lm_backend(backend)
    if isinstance(model, str):
        return CausalLM(model, backend=runtime, batch_size=batch_size)
    if not isinstance(runtime, Backend):
        if getattr(model, "backend", None) != "api":
            raise InputError("the loaded model runs in this process; pass a model name to reach it on a server",
                             field="backend")
        return model
    have = getattr(model, "backend", runtime)  # an object with CausalLM's methods may name no backend
    if runtime != TORCH and have != runtime:
        raise InputError(f"the loaded model runs backend {have}, not {runtime}; "
                         "pass a model name to load it with that backend", field="backend")
    return model
