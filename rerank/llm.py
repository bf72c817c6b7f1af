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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import InputError
from retrieval.models import resolve_model

BACKENDS = ("torch",)


def _gguf_location(path: str) -> tuple[str, str | None]:
    """``(folder or name, gguf file name or None)`` for a model path."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), p.name
    if p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(p), ggufs[0].name
        if len(ggufs) > 1:
            raise InputError(f"{len(ggufs)} .gguf files in the folder; name one of them", path=p)
    return path, None


class CausalLM:
    """A causal LM with its tokenizer, ready for ranking prompts."""

    def __init__(self, model: str, *, backend: str = "torch", device: str | None = None, batch_size: int = 4,
                 max_length: int = 4096) -> None:
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}", field="backend")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = model
        self.path, self.gguf_file = _gguf_location(resolve_model(model))
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
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.max_length = max_length
        self.backend = backend
        self._torch = torch

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

    def _batches(self, prompts: Sequence[str]) -> list[tuple[list[int], dict[str, Any]]]:
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_length]
        if too_long:
            raise InputError(f"a prompt of {len(encoded[too_long[0]])} tokens exceeds max_length={self.max_length}",
                             field="max_length")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        batches = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            features = self.tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            # left padding: positions count from each prompt's first real token
            features["position_ids"] = (features["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            batches.append((idx, {k: v.to(self.device) for k, v in features.items()}))
        return batches

    def next_token_logits(self, prompts: Sequence[str], token_ids: Sequence[int] | None = None,
                          progress: Any = False) -> np.ndarray:
        """Logits of the next token after each prompt: ``[len(prompts), len(token_ids) or vocab]`` float32."""
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

    def split_common_prefix(self, prompts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """``(context ids, tail ids per prompt)``: the prompts tokenized whole, cut at their longest common
        token prefix (each tail keeps at least one token), so ``context + tail`` is exactly each prompt's tokens."""
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        c = 0
        while c < min(len(x) for x in ids) - 1 and all(x[c] == ids[0][c] for x in ids):
            c += 1
        return list(ids[0][:c]), [list(x[c:]) for x in ids]

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

        torch = self._torch
        if self.backend != "torch":
            raise InputError(f"shared-prefix passes need the torch backend, not {self.backend!r}", field="backend")
        sizes = [len(ctx) + sum(len(t) for t in tails) for ctx, tails in groups]
        for (ctx, tails), n in zip(groups, sizes):
            if n > self.max_length:
                raise InputError(f"a group of {n} tokens (context and tails) exceeds max_length={self.max_length}",
                                 field="max_length")
            if any(len(t) < last for t in tails):
                raise InputError(f"every tail needs at least {last} tokens", field="tails")
        order = sorted(range(len(groups)), key=lambda g: -sizes[g])
        dtype = self.model.dtype
        bar = progress if hasattr(progress, "update") else tqdm(total=len(groups), desc="LLM groups", unit="group",
                                                                  disable=not progress, leave=False)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(sizes[g] for g in chunk)
                keep = max(sum(len(t) for t in groups[g][1]) for g in chunk)
                input_ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
                positions = torch.zeros((len(chunk), width), dtype=torch.long)
                allowed = torch.zeros((len(chunk), width, width), dtype=torch.bool)
                allowed[:, torch.arange(width), torch.arange(width)] = True  # padding attends to itself only
                reads: list[list[int]] = []  # per row: the kept-logits position of each tail's last token
                for b, g in enumerate(chunk):
                    ctx, tails = groups[g]
                    begin = at = width - sizes[g]  # left padding
                    input_ids[b, at:at + len(ctx)] = torch.tensor(list(ctx), dtype=torch.long)
                    positions[b, at:at + len(ctx)] = torch.arange(len(ctx))
                    allowed[b, at:at + len(ctx), at:at + len(ctx)] = torch.ones(len(ctx), len(ctx)).tril().bool()
                    at += len(ctx)
                    ends = []
                    for tail in tails:
                        t = len(tail)
                        input_ids[b, at:at + t] = torch.tensor(list(tail), dtype=torch.long)
                        positions[b, at:at + t] = len(ctx) + torch.arange(t)
                        allowed[b, at:at + t, begin:begin + len(ctx)] = True
                        allowed[b, at:at + t, at:at + t] = torch.ones(t, t).tril().bool()
                        ends.append(at + t - 1 - (width - keep))
                        at += t
                    reads.append(ends)
                mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask[:, None].to(self.device),
                                    position_ids=positions.to(self.device), logits_to_keep=keep).logits
                for b, g in enumerate(chunk):
                    yield g, [logits[b, end - last + 1:end + 1].float().cpu().numpy() for end in reads[b]]
                bar.update(len(chunk))
        if bar is not progress:
            bar.close()

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, progress: Any = False) -> list[str]:
        """Greedy continuations of each prompt (special tokens removed)."""
        from tqdm.auto import tqdm

        torch = self._torch
        texts: list[str] = [""] * len(prompts)
        bar = progress if hasattr(progress, "update") else tqdm(total=len(prompts), desc="LLM generate",
                                                                  unit="prompt", disable=not progress, leave=False)
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
