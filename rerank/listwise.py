"""Listwise LLM reranking over a sliding window of passages labelled ``[A]``, ``[B]``, ...

The prompt is RankGPT's (Sun et al., 2023, "Is ChatGPT Good at Search?"): the query, then the
window's passages each behind a single-token identifier, then "rank them, answer like [B] > [A]".
Two ways to read the model's order:

- ``mode="first"`` (FIRST; Reddy et al., EMNLP 2024, "FIRST: Faster Improved Listwise Reranking
  with Single Token Decoding"): the assistant turn is prefixed with ``[`` so the next token is the
  first identifier of the answer, and ONE forward pass gives the window's order: the identifiers
  sorted by their logits at that position (ties keep the input order).
- ``mode="generate"``: greedy-decode the whole permutation (``"[C] > [A] > [B]"``) and parse it with
  :func:`rankwise.rerank.permutation.parse_permutation` (RankGPT's repair of missing/repeated/unknown ids).

Deeper lists go through RankGPT's sliding window, from the back of the list to the front: with
window 20 and stride 10, ``[n-20, n)``, ``[n-30, n-10)``, ... and last ``[0, 20)``; each window's
new order is applied in place before the next one, so a relevant passage can climb from the bottom
to the top in one sweep. Windows of different queries are independent, so each step batches the
current window of every query into one model call. The final order becomes scores ``n - rank``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.rerank.llm import CausalLM, load_lm
from rankwise.rerank.permutation import labels, read_permutation
from rankwise.rerank.served import LogprobsUnavailable
from rankwise.retrieval.errors import InputError

log = logging.getLogger(__name__)

MODES = ("first", "generate")

SYSTEM = "You are RankGPT, an intelligent assistant that can rank passages based on their relevance to the query."
INTRO = ("I will provide you with {n} passages, each indicated by an identifier in square brackets like [A]. "
         "Rank the passages based on their relevance to the query: {query}")
OUTRO = ("Search query: {query}\n\n"
         "Rank the {n} passages above based on their relevance to the search query. All the passages should be "
         "included and listed using their identifiers, in descending order of relevance. The output format should "
         "be [] > [], e.g., {example}. Only respond with the ranking, do not say any word or explain.")
PREFIX = "["  # the assistant turn starts with "[", so the next token is the first identifier
TOKENS_PER_PASSAGE = 4  # "A", "]", " >", " [" per identifier in "[A] > [B] > ..."


def default_stride(window: int) -> int:
    """The stride when none is given: half the window (RankGPT's 20 and 10), at most 10, at least 1."""
    return max(1, min(10, window // 2))


def window_schedule(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` windows of a list of ``n``, back to front; the last one is ``[0, window)``."""
    if n <= 0:
        return []
    if n <= window:
        return [(0, n)]
    spans, end = [], n
    while end - window > 0:
        spans.append((end - window, end))
        end -= stride
    spans.append((0, window))
    return spans


class ListwiseReranker(Reranker):
    """FIRST (single-token, one forward pass per window) or generated-permutation listwise reranking."""

    name = "listwise"

    def __init__(self, model: str | CausalLM, *, mode: str = "first", window: int = 20, stride: int | None = None,
                 max_passage_tokens: int = 100, batch_size: int = 4, max_new_tokens: int | None = None,
                 backend: Any = "torch") -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"unknown listwise mode {mode!r}; choose from {', '.join(MODES)}", field="mode")
        if window < 1:
            raise InputError(f"window must be at least 1, got {window}", field="window")
        self._labels = labels(window)  # more passages than identifiers: InputError
        stride = default_stride(window) if stride is None else stride
        if not 1 <= stride <= window:
            raise InputError(f"stride must be within 1..window ({window}), got {stride}; a longer stride would skip "
                             "passages", field="stride")
        if max_passage_tokens < 1:
            raise InputError(f"max_passage_tokens must be at least 1, got {max_passage_tokens}",
                             field="max_passage_tokens")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}", field="max_new_tokens")
        # a string is loaded; anything else is used as is (a CausalLM, or an object with its methods)
        self.lm = load_lm(model, backend=backend, batch_size=batch_size)
        self.mode, self.window, self.stride = mode, window, stride
        self.max_passage_tokens, self.max_new_tokens = max_passage_tokens, max_new_tokens
        self._label_ids = self.lm.single_token_ids(self._labels)  # each identifier must be one token

    # --- prompts ------------------------------------------------------------------------------

    def prompt(self, query: str, passages: Sequence[str]) -> str:
        """The chat prompt ranking ``passages`` (already truncated) for ``query``, ending with ``[``."""
        return self.lm.chat(window_request(query, passages, self._labels), system=SYSTEM, assistant_prefix=PREFIX)

    def window_prompt(self, query: str, docs: Sequence[str]) -> str:
        """The prompt for one window of raw documents, each truncated as :meth:`score` truncates it."""
        return self.prompt(query, [self._passage(d) for d in docs])

    @property
    def label_ids(self) -> list[int]:
        """Token ids of the identifiers ``A``, ``B``, ...: FIRST reads the first answer token's logits at these."""
        return list(self._label_ids)

    def answer_ids(self, order: Sequence[int]) -> list[int]:
        """Token ids of the answer ``C] > [A] > [B]`` (after the prompt's ``[``) ranking passages ``order``, then EOS.

        Each identifier is its own single token (the one :meth:`label_ids` reads), so the first answer
        token is exactly the one FIRST scores; this is the target a FIRST reranker is trained on.
        """
        tokenizer = self.lm.tokenizer
        between = tokenizer.encode("] > [", add_special_tokens=False)
        ids: list[int] = []
        for rank, i in enumerate(order):
            ids += ([] if rank == 0 else between) + [self._label_ids[i]]
        ids += tokenizer.encode("]", add_special_tokens=False)
        return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])

    def _passage(self, text: str) -> str:
        text, cut = self.lm.truncate(" ".join(str(text).split()), self.max_passage_tokens)
        self.stats.truncated += cut
        return text

    # --- scoring ------------------------------------------------------------------------------

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        from rankwise.retrieval.progress import CostBar

        passages = [[self._passage(d) for d in docs] for _, docs in lists]
        self.stats.lists += len(lists)
        self.stats.passages += sum(len(p) for p in passages)
        orders = [list(range(len(p))) for p in passages]
        # a window of one passage has nothing to order: no model call
        schedules = [[(a, b) for a, b in window_schedule(len(p), self.window, self.stride) if b - a > 1]
                     for p in passages]
        bar = CostBar(total=sum(len(s) for s in schedules), desc=f"listwise ({self.mode})", unit="window",
                   disable=not progress, leave=False)
        try:
            for step in range(max((len(s) for s in schedules), default=0)):
                # the current window of every query that still has one: one batched model call
                jobs = [(i, schedules[i][step]) for i in range(len(lists)) if step < len(schedules[i])]
                prompts = [self.prompt(lists[i][0], [passages[i][j] for j in orders[i][a:b]]) for i, (a, b) in jobs]
                sizes = [b - a for _, (a, b) in jobs]
                perms = self._read(prompts, sizes, bar)
                for (i, (a, b)), perm in zip(jobs, perms):
                    current = orders[i][a:b]
                    orders[i][a:b] = [current[k] for k in perm]
                self.stats.forward_passes += len(jobs)
                self.stats.extra["windows"] = self.stats.extra.get("windows", 0) + len(jobs)
                self.stats.extra["steps"] = self.stats.extra.get("steps", 0) + 1
        finally:
            bar.close()
        return order_scores(orders)

    def _read(self, prompts: list[str], sizes: list[int], bar: Any) -> list[list[int]]:
        """Each window's order, by :attr:`mode`; FIRST on a server without log-probabilities falls back to
        generate mode (once, with a notice) when the server's config allows it (``no_logprobs=generate``)."""
        if self.mode != "first":
            return self._generate(prompts, sizes, bar)
        try:
            return self._first(prompts, sizes, bar)
        except LogprobsUnavailable as err:
            if not err.fallback:
                raise
            log.warning("%s; listwise falls back to mode=generate", err.message)
            self.mode = "generate"
            return self._generate(prompts, sizes, bar)

    def _first(self, prompts: list[str], sizes: list[int], bar: Any) -> list[list[int]]:
        """Each window's order: its identifiers sorted by the logit of the first answer token."""
        width = max(sizes)
        logits = np.asarray(self.lm.next_token_logits(prompts, self._label_ids[:width], progress=bar))
        return [np.argsort(-logits[r, :m], kind="stable").tolist() for r, m in enumerate(sizes)]

    def _generate(self, prompts: list[str], sizes: list[int], bar: Any) -> list[list[int]]:
        """Each window's order: the greedy-decoded ranking, parsed and repaired."""
        budget = self.max_new_tokens or TOKENS_PER_PASSAGE * max(sizes)
        texts = self.lm.generate(prompts, max_new_tokens=budget, progress=bar)
        perms = []
        for text, m in zip(texts, sizes):
            perm, repaired = read_permutation(PREFIX + text, m)
            self.stats.extra["repaired"] = self.stats.extra.get("repaired", 0) + repaired
            perms.append(perm)
        return perms


def window_request(query: str, passages: Sequence[str], ids: Sequence[str], *, intro: str | None = None,
                   outro: str | None = None) -> str:
    """The user turn of a listwise window: the query, the passages labelled ``[A]``.., the instruction
    (``intro`` / ``outro``: templates with ``{n}``, ``{query}`` and ``{example}``; FIRST's by default)."""
    intro, outro = intro or INTRO, outro or OUTRO
    n = len(passages)
    query = " ".join(query.split())
    example = " > ".join(f"[{x}]" for x in (["B", "A"] if n >= 2 else ["A"]))
    body = "\n".join(f"[{label}] {text}" for label, text in zip(ids, passages))
    return "\n\n".join([intro.format(n=n, query=query), body, outro.format(n=n, query=query, example=example)])


def order_scores(orders: Sequence[Sequence[int]]) -> list[list[float]]:
    """Scores from rankings: the document at rank r of n gets n - r (best first scores highest)."""
    out = []
    for order in orders:
        scores = [0.0] * len(order)
        for rank, doc in enumerate(order):
            scores[doc] = float(len(order) - rank)
        out.append(scores)
    return out

