"""ReasonRank-style reason-then-rank listwise reranking (``listwise:M,mode=reason``).

ReasonRank (Liu et al., 2025, "ReasonRank: Empowering Passage Ranking with Strong Reasoning
Ability") has the LLM write its reasoning inside ``<think> ... </think>`` and then the ranking
``[C] > [A] > [B]``. Here, for each window (the same back-to-front sliding window as FIRST and
generation, :mod:`rankwise.rerank.listwise`):

1. the assistant turn opens with ``<think>`` and up to ``max_reasoning_tokens`` tokens are decoded
   greedily;
2. if the reasoning closed (``</think>``) and identifiers follow it, the permutation is parsed from
   the text after the marker;
3. otherwise (reasoning that never closed within the budget, or closed with no ranking after it) the
   reasoning is cut there, closed with ``</think>`` and ``[``, and the permutation is decoded in a
   second call (at most 4 tokens per passage): "budget forcing";
4. the permutation is repaired as generation mode repairs it
   (:func:`rankwise.rerank.permutation.read_permutation`: repeated and unknown identifiers dropped, missing
   ones appended in input order), so an answer with no identifier at all keeps the input order.

The reasoning of every window is kept in :attr:`ReasoningReranker.records` (query, passages in the
window, reasoning, answer, permutation, whether the reasoning closed, whether it was forced) and
can be written as JSONL with :func:`write_reasoning` (``rankwise rerank --save-reasoning FILE``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankwise.rerank.listwise import SYSTEM, TOKENS_PER_PASSAGE, ListwiseReranker, window_request
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.permutation import _IDENTIFIER, LABELS, read_permutation
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open

OPEN, CLOSE = "<think>", "</think>"
OUTRO = ("Search query: {query}\n\n"
         "Rank the {n} passages above based on their relevance to the search query. First reason briefly about "
         "which passages answer the query, inside <think> </think>. Then give the ranking of all passages using "
         "their identifiers, in descending order of relevance, in the format [] > [], e.g., {example}.")


class ReasoningReranker(ListwiseReranker):
    """Reason (``<think> ... </think>``), then rank: ReasonRank's output format on a sliding window."""

    name = "listwise-reason"

    def __init__(self, model: str | CausalLM, *, mode: str = "reason", max_reasoning_tokens: int = 256,
                 window: int = 20, stride: int | None = None, max_passage_tokens: int = 100, batch_size: int = 4,
                 backend: Any = "torch") -> None:
        if mode != "reason":
            raise InputError(f"ReasoningReranker runs mode=reason, not {mode!r}", field="mode")
        if not isinstance(max_reasoning_tokens, int) or max_reasoning_tokens < 1:
            raise InputError(f"max_reasoning_tokens must be a whole number of at least 1, got "
                             f"{max_reasoning_tokens!r}", field="max_reasoning_tokens")
        super().__init__(model, mode="generate", window=window, stride=stride,
                         max_passage_tokens=max_passage_tokens, batch_size=batch_size, backend=backend)
        self.mode = "reason"
        self.max_reasoning_tokens = max_reasoning_tokens
        self.records: list[dict[str, Any]] = []
        self._prompt_query: dict[str, list[str]] = {}  # prompt -> the queries it was built for

    def prompt(self, query: str, passages: Sequence[str]) -> str:
        """The chat prompt for one window, with the assistant turn opened by ``<think>``."""
        text = self.lm.chat(window_request(query, passages, self._labels, outro=OUTRO), system=SYSTEM,
                            assistant_prefix=OPEN)
        self._prompt_query.setdefault(text, []).append(query)
        return text

    def _generate(self, prompts: list[str], sizes: list[int], bar: Any) -> list[list[int]]:
        """Reason, then read (or force) the permutation after ``</think>``; repaired."""
        thoughts = self.lm.generate(prompts, max_new_tokens=self.max_reasoning_tokens, progress=bar)
        reasoning, answers, closed = [], [], []
        for text, m in zip(thoughts, sizes):
            head, sep, tail = text.partition(CLOSE)
            reasoning.append(head)
            closed.append(bool(sep))
            answers.append(tail if sep and _has_identifier(tail, m) else None)
        forced = [r for r, a in enumerate(answers) if a is None]
        if forced:
            budget = TOKENS_PER_PASSAGE * max(sizes[r] for r in forced)
            again = self.lm.generate([prompts[r] + reasoning[r] + CLOSE + "\n[" for r in forced],
                                     max_new_tokens=budget)
            for r, text in zip(forced, again):
                answers[r] = "[" + text
            self.stats.forward_passes += len(forced)
            self.stats.extra["forced"] = self.stats.extra.get("forced", 0) + len(forced)
        self.stats.extra["unclosed"] = self.stats.extra.get("unclosed", 0) + closed.count(False)
        perms = []
        for r, (prompt, m) in enumerate(zip(prompts, sizes)):
            perm, repaired = read_permutation(answers[r], m)
            self.stats.extra["repaired"] = self.stats.extra.get("repaired", 0) + repaired
            waiting = self._prompt_query.get(prompt) or [""]
            query = waiting.pop(0)
            if not waiting:
                self._prompt_query.pop(prompt, None)
            self.records.append({"query": query, "passages": m, "reasoning": reasoning[r].strip(),
                                 "closed": closed[r], "forced": r in forced, "answer": answers[r].strip(),
                                 "permutation": perm, "repaired": repaired})
            perms.append(perm)
        return perms


def _has_identifier(text: str, n: int) -> bool:
    """Whether ``text`` names at least one of the first ``n`` identifiers."""
    return any(m.group(1) in LABELS[:n] for m in _IDENTIFIER.finditer(text))


def write_reasoning(path: str | Path, records: Sequence[dict[str, Any]],
                    query_ids: dict[str, str] | None = None) -> None:
    """Write one JSON object per window to ``path`` (JSONL, atomically); ``query_ids`` maps query text to its id."""
    ids = {" ".join(t.split()): q for q, t in (query_ids or {}).items()}
    with atomic_open(path) as fh:
        for record in records:
            row = ({"query_id": ids[record["query"]]} if record["query"] in ids else {}) | record
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
