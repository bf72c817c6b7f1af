"""Pointwise LLM reranking: a causal LM judges one document at a time.

- ``mode="yesno"``: relevance = log p("yes") - log p("no") at the answer position (as in
  Nogueira et al., 2020, monoT5, and Sachan et al. / Qin et al. for decoder LLMs).
- ``mode="erank"``: the fine-grained integer score of ERank (2025): the model is asked for an
  integer 0..``levels``; the score is the expected value of that integer under the model's
  distribution over the score token(s). When a number above 9 is not one token (e.g. "10" is
  "1" + "0"), its probability is read from a second, batched pass on the prompt followed by "1".
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.rerank.llm import CausalLM, load_lm
from rankwise.rerank.scores import expected_score, log_softmax, two_token_firsts
from rankwise.retrieval.errors import InputError

MODES = ("yesno", "erank")

SYSTEM = "You judge whether a document is relevant to a search query."
YESNO = ("Query: {query}\n\nDocument: {doc}\n\n"
         "Is the document relevant to the query? Answer with one word, yes or no.")
ERANK = ("Query: {query}\n\nDocument: {doc}\n\n"
         "How relevant is the document to the query? Answer with one integer from 0 (not relevant) "
         "to {levels} (perfectly relevant).")


class LLMPointwiseReranker(Reranker):
    """Pointwise relevance from a causal LM's next-token logits (``yesno`` or ``erank``)."""

    name = "pointwise-llm"

    def __init__(self, model: str | CausalLM, *, mode: str = "yesno", levels: int = 10,
                 max_passage_tokens: int = 300, batch_size: int = 8, backend: Any = "torch") -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"unknown pointwise mode {mode!r}; choose from {', '.join(MODES)}", field="mode")
        if not 1 <= levels <= 99:
            raise InputError(f"levels must be within 1..99, got {levels}", field="levels")
        self.lm = load_lm(model, backend=backend, batch_size=batch_size)
        self.mode, self.levels, self.max_passage_tokens = mode, levels, max_passage_tokens
        if mode == "yesno":
            self._yes = self._variants(("yes", "Yes", " yes", " Yes"))
            self._no = self._variants(("no", "No", " no", " No"))
        else:
            self._digits = self.lm.single_token_ids([str(d) for d in range(10)])

    def _variants(self, words: Sequence[str]) -> list[int]:
        ids = []
        for w in words:
            tokens = self.lm.tokenizer.encode(w, add_special_tokens=False)
            if len(tokens) == 1 and tokens[0] not in ids:
                ids.append(tokens[0])
        if not ids:
            raise InputError(f"none of {list(words)} is a single token for this tokenizer", path=self.lm.path)
        return ids

    def _prompt(self, query: str, doc: str) -> str:
        doc, cut = self.lm.truncate(doc, self.max_passage_tokens)
        self.stats.truncated += cut
        template = YESNO if self.mode == "yesno" else ERANK
        return self.lm.chat(template.format(query=query, doc=doc, levels=self.levels), system=SYSTEM)

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        prompts = [self._prompt(q, d) for q, docs in lists for d in docs]
        self.stats.lists += len(lists)
        self.stats.passages += len(prompts)
        flat = self._yesno(prompts, progress) if self.mode == "yesno" else self._expected(prompts, progress)
        out, start = [], 0
        for _, docs in lists:
            out.append([float(x) for x in flat[start:start + len(docs)]])
            start += len(docs)
        return out

    def _yesno(self, prompts: list[str], progress: bool) -> np.ndarray:
        if not prompts:
            return np.empty(0)
        logits = self.lm.next_token_logits(prompts, self._yes + self._no, progress=progress)
        self.stats.forward_passes += len(prompts)
        lp = log_softmax(logits)  # over the yes/no variants only
        k = len(self._yes)
        yes = np.logaddexp.reduce(lp[:, :k], axis=1)
        no = np.logaddexp.reduce(lp[:, k:], axis=1)
        return yes - no

    def _expected(self, prompts: list[str], progress: bool) -> np.ndarray:
        """Expected integer score over 0..levels (see :func:`rankwise.rerank.scores.expected_score`)."""
        if not prompts:
            return np.empty(0)
        first_logits = self.lm.next_token_logits(prompts, self._digits, progress=progress)
        self.stats.forward_passes += len(prompts)
        p_second = {}
        for first in two_token_firsts(self.levels):
            cont = self.lm.next_token_logits([p + str(first) for p in prompts], progress=False)
            self.stats.forward_passes += len(prompts)
            p_second[first] = np.exp(log_softmax(cont.astype(np.float64)))[:, self._digits]
        return expected_score(first_logits, p_second, self.levels)
