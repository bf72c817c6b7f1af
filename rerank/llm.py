"""``CausalLM``: the one place causal LMs are loaded and prompted for the LLM rerankers.

Loads a Hugging Face folder, a hub name (``$RANKWISE_MODELS`` mirror first) or a GGUF file
(``transformers``' ``gguf_file=``, dequantized to float), applies the model's own chat template
when it has one, and reads next-token logits in batches sorted by length with left padding (only
the last position's logits are computed). The pointwise-LLM, listwise (FIRST) and groupwise
rerankers all go through it, so the inference backend has one seam: ``backend``.

Besides plain prompts it runs *shared-prefix* sequences (:meth:`CausalLM.iter_tail_logits`): one
context followed by several short tails, each of which sees the context and itself but no other
tail (a 4-D attention mask and position ids that continue from the context), so the logits at
each tail equal those of the separate prompt ``context + tail`` at the cost of one pass.

``backend="onnx"`` runs every method on ONNX Runtime (:mod:`retrieval.backend`): the exported
graph takes the attention mask per query position and returns the logits only at the positions and
token ids asked for, which serves :meth:`next_token_logits` and :meth:`iter_tail_logits` alike;
:meth:`generate` decodes greedily with one full pass per new token (the graph keeps no KV cache, so
it is slower than torch's ``generate``: use ``mode="first"`` listwise reranking with ONNX).
``int8=True`` uses the dynamically quantized graph, one prompt at a time (its activation scales
are per batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import rerank.onnx  # noqa: F401 - registers the causal-lm export kind
from retrieval.backend import check_backend
from retrieval.backend.sources import gguf_location
from retrieval.errors import InputError
from retrieval.models import resolve_model


CPU_BATCH_TOKENS = 4096  # on the CPU, torch batches hold at most this many padded tokens


class CausalLM:
    """A causal LM with its tokenizer, ready for ranking prompts."""

    def __init__(self, model: str, *, backend: str = "torch", device: str | None = None, batch_size: int = 4,
                 max_length: int = 4096, int8: bool = False) -> None:
        backend, int8 = check_backend(backend, int8)
        self.name = model
        self.path, self.gguf_file = gguf_location(resolve_model(model))
        self.batch_size = batch_size
        self.batch_tokens: int | None = None  # most padded tokens in one batch (None: no limit)
        self.max_length = max_length
        self.backend = backend
        self.int8 = bool(int8)
        if backend == "onnx":
            self._init_onnx(device)
        else:
            self._init_torch(device)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _init_torch(self, device: str | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load a causal LM: {str(err).splitlines()[0]}", path=self.path) from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            self.model.half()
        self.model.to(self.device).eval()
        if self.device.type == "cpu":
            # a padded batch sends torch's attention down its masked path: on 2 Xeon cores, 20 FIRST windows
            # took 116 s in batches of 4 and 86 s one at a time, while 300-token pointwise prompts batched
            # ran 10% faster (BENCHMARKS.md)
            self.batch_tokens = CPU_BATCH_TOKENS
        self._torch = torch

    def _init_onnx(self, device: str | None) -> None:
        from transformers import AutoTokenizer

        from rerank.onnx.chunked_attention import chunk_prompt_attention
        from retrieval.backend.cache import exported
        from retrieval.backend.session import OnnxSession

        export = exported(self.name, "causal-lm", int8=self.int8)
        self.model = None
        self.export = export
        self.session = OnnxSession(export.file(self.int8), device=device, int8=self.int8,
                                   rewrite=chunk_prompt_attention)
        if self.session.provider == "CPUExecutionProvider":
            # one prompt at a time on the CPU: the attention runs in query chunks only for a batch of one
            # (rerank.onnx.chunked_attention), batching long prompts buys no speed there, and int8
            # quantizes activations with one scale per batch, so a prompt's logits would depend on the
            # prompts padded beside it (FIRST nDCG@10 on 20 SciFact queries: 0.6921 in batches of 4
            # against 0.7090 one at a time, torch 0.7068)
            self.batch_size = 1
        self.device = None
        self.tokenizer = AutoTokenizer.from_pretrained(export.folder)
        self._vocab = np.arange(export.settings["vocab_size"], dtype=np.int64)
        self._eos = set(export.settings["eos_token_ids"])

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
        of at most :attr:`batch_tokens` padded tokens when that is set."""
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_length]
        if too_long:
            raise InputError(f"a prompt of {len(encoded[too_long[0]])} tokens exceeds max_length={self.max_length}",
                             field="max_length")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        budget = self.batch_tokens
        batches: list[list[int]] = []
        for i in order:  # longest first, so a batch's first prompt sets its padded width
            batch = batches[-1] if batches else None
            if batch is None or len(batch) >= self.batch_size or \
                    (budget and (len(batch) + 1) * len(encoded[batch[0]]) > budget):
                batches.append([i])
            else:
                batch.append(i)
        return encoded, batches

    def _batches(self, prompts: Sequence[str]) -> list[tuple[list[int], dict[str, Any]]]:
        """Torch batches: ``(prompt indices, left-padded features with position ids)``."""
        encoded, batches = self._encode(prompts)
        out = []
        for idx in batches:
            features = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            # left padding: positions count from each prompt's first real token
            features["position_ids"] = (features["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            out.append((idx, {k: v.to(self.device) for k, v in features.items()}))
        return out

    def _onnx_logits(self, sequences: Sequence[Sequence[int]], token_ids: np.ndarray) -> np.ndarray:
        """``[len(sequences), len(token_ids)]`` next-token logits after each sequence, from the ONNX graph."""
        from retrieval.backend.features import prompt_features

        feed = prompt_features(sequences, self.tokenizer.pad_token_id)
        feed["token_ids"] = token_ids
        return self.session(feed)[:, 0, :]

    def next_token_logits(self, prompts: Sequence[str], token_ids: Sequence[int] | None = None,
                          progress: Any = False) -> np.ndarray:
        """Logits of the next token after each prompt: ``[len(prompts), len(token_ids) or vocab]`` float32."""
        if self.backend == "onnx":
            return self._next_token_logits_onnx(prompts, token_ids, progress)
        from tqdm.auto import tqdm

        torch = self._torch
        out: np.ndarray | None = None
        cols = None if token_ids is None else torch.tensor(list(token_ids), device=self.device)
        bar = progress if hasattr(progress, "update") else tqdm(total=len(prompts), desc="LLM", unit="prompt",
                                                                  disable=not progress, leave=False)
        with torch.inference_mode():
            for idx, features in self._batches(prompts):
                logits = self.model(**features, logits_to_keep=1).logits[:, -1, :].float()
                if cols is not None:
                    logits = logits.index_select(1, cols)
                values = logits.cpu().numpy()
                if out is None:
                    out = np.empty((len(prompts), values.shape[1]), dtype=np.float32)
                out[idx] = values
                bar.update(len(idx))
        if bar is not progress:
            bar.close()
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def _next_token_logits_onnx(self, prompts: Sequence[str], token_ids: Sequence[int] | None,
                                progress: Any) -> np.ndarray:
        from tqdm.auto import tqdm

        cols = self._vocab if token_ids is None else np.asarray(list(token_ids), dtype=np.int64)
        if not len(prompts):
            return np.empty((0, 0), dtype=np.float32)
        out = np.empty((len(prompts), len(cols)), dtype=np.float32)
        encoded, batches = self._encode(prompts)
        bar = progress if hasattr(progress, "update") else tqdm(total=len(prompts), desc="LLM (onnx)", unit="prompt",
                                                                  disable=not progress, leave=False)
        for idx in batches:
            out[idx] = self._onnx_logits([encoded[i] for i in idx], cols)
            bar.update(len(idx))
        if bar is not progress:
            bar.close()
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
        from tqdm.auto import tqdm

        sizes = [len(ctx) + sum(len(t) for t in tails) for ctx, tails in groups]
        for (ctx, tails), n in zip(groups, sizes):
            if n > self.max_length:
                raise InputError(f"a group of {n} tokens (context and tails) exceeds max_length={self.max_length}",
                                 field="max_length")
            if any(len(t) < last for t in tails):
                raise InputError(f"every tail needs at least {last} tokens", field="tails")
        order = sorted(range(len(groups)), key=lambda g: -sizes[g])
        forward = self._tail_forward_onnx if self.backend == "onnx" else self._tail_forward_torch
        bar = progress if hasattr(progress, "update") else tqdm(total=len(groups), desc="LLM groups", unit="group",
                                                                  disable=not progress, leave=False)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            input_ids, positions, allowed, ends = self._group_batch(groups, chunk, sizes)
            yield from zip(chunk, forward(input_ids, positions, allowed, ends, last))
            bar.update(len(chunk))
        if bar is not progress:
            bar.close()

    def _tail_forward_torch(self, input_ids: np.ndarray, positions: np.ndarray, allowed: np.ndarray,
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

    def _tail_forward_onnx(self, input_ids: np.ndarray, positions: np.ndarray, allowed: np.ndarray,
                           ends: list[list[int]], last: int) -> list[list[np.ndarray]]:
        reads = [[p for end in row for p in range(end - last + 1, end + 1)] for row in ends]
        gather = np.zeros((len(reads), max(len(r) for r in reads)), dtype=np.int64)
        for b, row in enumerate(reads):
            gather[b, :len(row)] = row
        logits = self.session({"input_ids": input_ids, "allowed": allowed, "position_ids": positions,
                               "positions": gather, "token_ids": self._vocab})
        return [[logits[b, k * last:(k + 1) * last] for k in range(len(row))] for b, row in enumerate(ends)]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, progress: Any = False) -> list[str]:
        """Greedy continuations of each prompt (special tokens removed)."""
        from tqdm.auto import tqdm

        texts: list[str] = [""] * len(prompts)
        bar = progress if hasattr(progress, "update") else tqdm(total=len(prompts), desc="LLM generate",
                                                                  unit="prompt", disable=not progress, leave=False)
        if self.backend == "onnx":
            encoded, batches = self._encode(prompts)
            for idx in batches:
                for i, row in zip(idx, self._greedy_onnx([encoded[i] for i in idx], max_new_tokens)):
                    texts[i] = self.tokenizer.decode(row, skip_special_tokens=True)
                bar.update(len(idx))
        else:
            torch = self._torch
            with torch.inference_mode():
                for idx, features in self._batches(prompts):
                    features = {k: v for k, v in features.items() if k != "position_ids"}
                    ids = self.model.generate(**features, max_new_tokens=max_new_tokens, do_sample=False,
                                              pad_token_id=self.tokenizer.pad_token_id)
                    new = ids[:, features["input_ids"].shape[1]:]
                    for i, row in zip(idx, new):
                        texts[i] = self.tokenizer.decode(row, skip_special_tokens=True)
                    bar.update(len(idx))
        if bar is not progress:
            bar.close()
        return texts

    def _greedy_onnx(self, sequences: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding on the ONNX graph: one full pass per new token (no KV cache), unfinished rows only."""
        seqs = [list(s) for s in sequences]
        new: list[list[int]] = [[] for _ in seqs]
        live = list(range(len(seqs)))
        for _ in range(max_new_tokens):
            if not live:
                break
            picks = self._onnx_logits([seqs[r] for r in live], self._vocab).argmax(-1)
            for r, token in zip(live, picks.tolist()):
                new[r].append(token)
                seqs[r].append(token)
            live = [r for r in live if new[r][-1] not in self._eos]
        return new


def load_lm(model: Any, *, backend: str = "torch", int8: bool = False, batch_size: int = 4) -> Any:
    """The :class:`CausalLM` an LLM reranker runs: ``model`` loaded with ``backend`` (``torch``, ``onnx`` or
    ``onnx-int8``) when it is a name or path, else ``model`` itself (a loaded CausalLM, or an object with
    its methods), which must then run the backend asked for, if one is."""
    runtime, int8 = check_backend(backend, int8)
    if isinstance(model, str):
        return CausalLM(model, backend=runtime, int8=int8, batch_size=batch_size)
    have = (getattr(model, "backend", runtime), bool(getattr(model, "int8", int8)))
    if (runtime, int8) != ("torch", False) and have != (runtime, int8):
        raise InputError(f"the loaded model runs backend {have[0]}{'-int8' if have[1] else ''}, not {backend}"
                         f"{'-int8' if int8 and backend == 'onnx' else ''}; pass a model name to load it with "
                         "that backend", field="backend")
    return model
