"""Pointwise LLM reranking: a causal LM judges one document at a time.

- ``mode="yesno"``: relevance = log p("yes") - log p("no") at the answer position (as in
  Nogueira et al., 2020, monoT5, and Sachan et al. / Qin et al. for decoder LLMs).
- ``mode="erank"``: the fine-grained integer score of ERank (2025): the model is asked for an
  integer 0..``levels``; the score is the expected value of that integer under the model's
  distribution over the score token(s). When a number above 9 is not one token (e.g. "10" is
  "1" + "0"), its probability is read from a second, batched pass on the prompt followed by "1".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rerank.base import Reranker
from rerank.llm import CausalLM
from retrieval.errors import InputError

MODES = ("yesno", "erank")

SYSTEM = "You judge whether a document is relevant to a search query."
YESNO = ("Query: {query}\n\nDocument: {doc}\n\n"
         "Is the document relevant to the query? Answer with one word, yes or no.")
ERANK = ("Query: {query}\n\nDocument: {doc}\n\n"
         "How relevant is the document to the query? Answer with one integer from 0 (not relevant) "
         "to {levels} (perfectly relevant).")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class LLMPointwiseReranker(Reranker):
    """Pointwise relevance from a causal LM's next-token logits (``yesno`` or ``erank``)."""

    name = "pointwise-llm"

    def __init__(self, model: str | CausalLM, *, mode: str = "yesno", levels: int = 10,
                 max_passage_tokens: int = 300, batch_size: int = 8) -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"unknown pointwise mode {mode!r}; choose from {', '.join(MODES)}", field="mode")
        if not 1 <= levels <= 99:
            raise InputError(f"levels must be within 1..99, got {levels}", field="levels")
        self.lm = model if isinstance(model, CausalLM) else CausalLM(model, batch_size=batch_size)
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
        lp = _log_softmax(logits)  # over the yes/no variants only
        k = len(self._yes)
        yes = np.logaddexp.reduce(lp[:, :k], axis=1)
        no = np.logaddexp.reduce(lp[:, k:], axis=1)
        return yes - no

    def _expected(self, prompts: list[str], progress: bool) -> np.ndarray:
        """Expected integer score: sum_k k * p(k), with p over 0..levels."""
        if not prompts:
            return np.empty(0)
        p_digit = np.exp(_log_softmax(self.lm.next_token_logits(prompts, self._digits, progress=progress)))
        self.stats.forward_passes += len(prompts)
        values = np.arange(10, dtype=np.float64)
        if self.levels < 10:  # only 0..levels are answers
            p = p_digit[:, : self.levels + 1]
            return (p / p.sum(axis=1, keepdims=True)) @ values[: self.levels + 1]
        # two-digit answers start with their first digit: p(1x) = p("1") * p(x | "1"), p(1) = p("1") * p(end | "1")
        first_digits = sorted({int(str(v)[0]) for v in range(10, self.levels + 1)})
        expected = p_digit @ values
        for first in first_digits:
            cont = self.lm.next_token_logits([p + str(first) for p in prompts], progress=False)
            self.stats.forward_passes += len(prompts)
            p_next = np.exp(_log_softmax(cont))
            seconds = [v % 10 for v in range(10, self.levels + 1) if v // 10 == first]
            p_two = p_next[:, [self._digits[s] for s in seconds]]  # p(second digit | first)
            stop = np.clip(1.0 - p_two.sum(axis=1), 0.0, 1.0)
            two_values = np.array([first * 10 + s for s in seconds], dtype=np.float64)
            expected += p_digit[:, first] * (p_two @ two_values + stop * first - first)
        return expected
