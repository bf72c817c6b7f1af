"""IRanker-style ranking by iterative elimination (``listwise:M,mode=eliminate``).

IRanker (Feng et al., 2025, "IRanker: Towards Ranking Foundation Model") turns ranking into a
sequence of single choices: the LLM sees the remaining candidates, names the worst (or the best)
one, that candidate is removed, and it is asked again. Each step here is ONE forward pass read as
FIRST reads it (Reddy et al., 2024): the assistant turn starts with ``[`` and the candidate chosen
is the identifier with the highest next-token logit among the *remaining* candidates, which are
relabelled ``[A]``, ``[B]``, ... in their current order at every step.

- ``eliminate="worst"``: the ranking is built bottom-up (the first candidate removed is last).
- ``eliminate="best"``: top-down (the first candidate picked is first).

Lists longer than ``window`` go through the same back-to-front sliding window as FIRST
(:func:`rankwise.rerank.listwise.window_schedule`), each window ordered by elimination, so a relevant
passage can climb from the bottom to the top in one sweep. Steps of every query's current window
run as one batched model call.

``k`` stops early once the top-k is fixed. In a window, the passages that move on to the next
window only need to be the right *set*; passages fixed below rank k need no order. So
``best`` picks only ``max(carried, k - start)`` passages per window, and ``worst`` removes
passages until only the carried ones remain (the final window: one). Bottom-up elimination decides
the top ranks last, so ``k`` cannot shorten ``worst`` in the final window: ``worst`` costs
``m - 1`` passes for a single window of ``m`` whatever ``k`` is, ``best`` costs ``min(k, m - 1)``.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.rerank.listwise import PREFIX, SYSTEM, default_stride, order_scores, window_schedule
from rankwise.rerank.llm import CausalLM, load_lm
from rankwise.rerank.permutation import labels
from rankwise.retrieval.errors import InputError

ELIMINATE = ("worst", "best")

INTRO = ("I will provide you with {n} passages, each indicated by an identifier in square brackets like [A]. "
         "Find the passage that is {which} relevant to the query: {query}")
OUTRO = ("Search query: {query}\n\n"
         "Which of the {n} passages above is the {which} relevant to the search query? Answer with its identifier "
         "only, e.g., [B]. Do not say any word or explain.")


class EliminationReranker(Reranker):
    """Iterative elimination (IRanker): one forward pass per removed (or picked) candidate."""

    name = "listwise-eliminate"

    def __init__(self, model: str | CausalLM, *, mode: str = "eliminate", eliminate: str = "worst",
                 k: int | None = None, window: int = 20, stride: int | None = None, max_passage_tokens: int = 100,
                 batch_size: int = 4, backend: Any = "torch") -> None:
        super().__init__()
        if mode != "eliminate":
            raise InputError(f"EliminationReranker runs mode=eliminate, not {mode!r}", field="mode")
        if eliminate not in ELIMINATE:
            raise InputError(f"eliminate={eliminate!r}: choose worst or best", field="eliminate")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a whole number of at least 1, got {k!r}", field="k")
        if window < 2:
            raise InputError(f"window must be at least 2, got {window}", field="window")
        self._labels = labels(window)
        stride = default_stride(window) if stride is None else stride
        if not 1 <= stride < window:
            raise InputError(f"stride must be within 1..window-1 ({window - 1}), got {stride}", field="stride")
        if max_passage_tokens < 1:
            raise InputError(f"max_passage_tokens must be at least 1, got {max_passage_tokens}",
                             field="max_passage_tokens")
        self.lm = load_lm(model, backend=backend, batch_size=batch_size)
        self.mode, self.eliminate, self.k = mode, eliminate, k
        self.window, self.stride, self.max_passage_tokens = window, stride, max_passage_tokens
        self._label_ids = self.lm.single_token_ids(self._labels)

    def prompt(self, query: str, passages: Sequence[str]) -> str:
        """The chat prompt asking for the worst (or best) of ``passages``, ending with ``[``."""
        n, which = len(passages), ("least" if self.eliminate == "worst" else "most")
        query = " ".join(query.split())
        body = "\n".join(f"[{label}] {text}" for label, text in zip(self._labels, passages))
        user = "\n\n".join([INTRO.format(n=n, which=which, query=query), body,
                            OUTRO.format(n=n, which=which, query=query)])
        return self.lm.chat(user, system=SYSTEM, assistant_prefix=PREFIX)

    def _passage(self, text: str) -> str:
        text, cut = self.lm.truncate(" ".join(str(text).split()), self.max_passage_tokens)
        self.stats.truncated += cut
        return text

    def _steps(self, start: int, size: int, carried: int) -> int:
        """Passes to order a window of ``size`` at list position ``start`` whose first ``carried`` move on."""
        if self.eliminate == "worst":
            return size - max(carried, 1)
        k = self.k if self.k is not None else start + size
        return min(size - 1, max(carried, k - start))

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        from rankwise.retrieval.progress import CostBar

        passages = [[self._passage(d) for d in docs] for _, docs in lists]
        self.stats.lists += len(lists)
        self.stats.passages += sum(len(p) for p in passages)
        orders = [list(range(len(p))) for p in passages]
        schedules = [window_schedule(len(p), self.window, self.stride) for p in passages]
        plans: list[list[tuple[int, int, int]]] = []  # per query: (start, end, passes) of each window
        for spans in schedules:
            plan = []
            for w, (a, b) in enumerate(spans):
                carried = max(0, min(b, spans[w + 1][1]) - a) if w + 1 < len(spans) else 0
                plan.append((a, b, self._steps(a, b - a, carried)))
            plans.append(plan)
        bar = CostBar(total=sum(s for plan in plans for *_, s in plan), desc=f"eliminate ({self.eliminate})",
                   unit="pass", disable=not progress, leave=False)
        try:
            for step in range(max((len(p) for p in plans), default=0)):
                jobs = [(i, plans[i][step]) for i in range(len(lists)) if step < len(plans[i])]
                jobs = [(i, w) for i, w in jobs if w[2] > 0]
                # per job: the remaining window positions (in current order) and the chosen ones, in choice order
                remaining = {i: list(orders[i][a:b]) for i, (a, b, _) in jobs}
                chosen: dict[int, list[int]] = {i: [] for i, _ in jobs}
                for turn in range(max((w[2] for _, w in jobs), default=0)):
                    live = [i for i, w in jobs if turn < w[2]]
                    prompts = [self.prompt(lists[i][0], [passages[i][d] for d in remaining[i]]) for i in live]
                    width = max(len(remaining[i]) for i in live)
                    logits = np.asarray(self.lm.next_token_logits(prompts, self._label_ids[:width]))
                    for r, i in enumerate(live):
                        m = len(remaining[i])
                        chosen[i].append(remaining[i].pop(int(np.argmax(logits[r, :m]))))  # ties: the earlier one
                    self.stats.forward_passes += len(live)
                    self.stats.extra["steps"] = self.stats.extra.get("steps", 0) + 1
                    bar.update(len(live))
                for i, (a, b, _) in jobs:
                    if self.eliminate == "worst":  # removed first = ranked last; the rest keep their order on top
                        orders[i][a:b] = remaining[i] + chosen[i][::-1]
                    else:  # picked first = ranked first; the rest keep their order below
                        orders[i][a:b] = chosen[i] + remaining[i]
                self.stats.extra["windows"] = self.stats.extra.get("windows", 0) + len(jobs)
        finally:
            bar.close()
        return order_scores(orders)
