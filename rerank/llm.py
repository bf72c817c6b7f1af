"""``CausalLM``: the one place causal LMs are loaded and prompted for the LLM rerankers.

Loads a Hugging Face folder, a hub name (``$RANKWISE_MODELS`` mirror first) or a GGUF file
(``transformers``' ``gguf_file=``, dequantized to float), applies the model's own chat template
when it has one, and reads next-token logits in batches sorted by length with left padding (only
the last position's logits are computed). The pointwise-LLM, listwise (FIRST) and groupwise
rerankers all go through it, so the inference backend has one seam: ``backend``.
"""

from __future__ import annotations

from collections.abc import Sequence
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
