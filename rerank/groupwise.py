"""Groupwise LLM reranking: GroupRank's paradigm (the query and a group of documents in one prompt).

GroupRank ("GroupRank: A Groupwise Reranking Paradigm Driven by Reinforcement Learning", 2025)
sits between pointwise and listwise reranking: the model reads the query together with a group of
G documents and gives *every* document of the group an absolute relevance score. Because each
score is on a fixed scale (not a rank inside the group), scores from different groups can be
compared, so a long candidate list is scored group by group and merged by sorting; and because the
model sees the whole group, each judgement can use the other documents as context.

How a score is read here (zero-shot, from next-token logits, as ERank reads a pointwise score):

* The *group context*: a user turn with the query, the G documents labelled ``[A]``, ``[B]``, ...
  and the request to rate every one of them with an integer 0..``levels``, answering one line per
  document in the form ``[A]: <score>``; then the assistant turn.
* A *slot prompt* per document: the group context followed by ``[X]:`` (and a space when the
  tokenizer writes the digit as its own token). The next-token distribution over the answer
  tokens is that document's score distribution; its score is the expected value
  ``sum_k k * p(k)``. When the tokenizer writes a two-digit answer as two tokens (``levels >= 10``;
  "10" is "1" + "0" for most), p("1") is split as in :mod:`rankwise.rerank.pointwise`: p(10) = p("1")
  p("0" | "1"), read from the slot prompt followed by the token "1".
  Every slot prompt contains the whole group, so each score is conditioned on all G documents:
  the groupwise property.
* ``share_prefix=True`` (default): ONE forward pass per group gives all G scores. The G slot
  prompts differ only in their last few tokens, so the group's sequence is the context once
  followed by the G short slot tails (each with its "1" appended when two-digit answers need it),
  with a 4-D attention mask by which each tail sees the context and itself but no other tail, and
  position ids by which each tail continues from the end of the context. The logits at each
  tail's last tokens are then exactly (up to float rounding) those of the separate slot prompts,
  at the cost of one prompt instead of G (or 2G). Groups of every round of every query are
  batched together (``lm.batch_size`` groups a call, longest first). ``stats.forward_passes``
  counts these group sequences.
* ``share_prefix=False``: the G slot prompts (and their "1"-extended copies) go as separate
  prompts to :meth:`CausalLM.next_token_logits`, all groups of all rounds and queries in one call
  (it sorts by length and batches); ``stats.forward_passes`` counts those prompts. It is the
  reference the shared pass is tested against (on torch and on ONNX Runtime alike).

  Teacher-forcing one full ``[A]: s\n[B]: s ...`` answer instead would condition each score on
  placeholder scores of the earlier slots; the masked tails avoid that.

Groups (:meth:`GroupwiseReranker.plan`): every round shuffles the candidates (a NumPy Generator
seeded with ``seed`` and a hash of the query: a query's plan, hence its scores, does not depend on
the other queries of the batch, yet queries do not all share one plan, which would put every
query's BM25 top hit in the same slot) and cuts the shuffled order into groups of G. A
short last group is filled up to G with candidates drawn at random from the round's other groups
(so every group has the same size and context; those candidates are simply scored once more). A
list shorter than G is one group of all its candidates. Every candidate therefore appears in at
least ``rounds`` groups, at varying slots and with varying neighbours.

Merging (``calibration``): a candidate's score is the mean of its scores over every group it
appeared in. With ``"none"`` (the default) the scores are the model's absolute 0..``levels``
judgements, which is what GroupRank trains for and what makes groups comparable. ``"zscore"``
first standardises the scores inside each group (mean 0, standard deviation 1; a group whose
scores are all equal gives 0s), which removes a per-group offset or spread (e.g. a model that is
harsher in a group of long documents) at the cost of the absolute scale: a strong document in a
strong group scores lower than it should. Over several random rounds that bias averages out, much
as a Borda count over random groupings would.
"""

from __future__ import annotations

from typing import Any

import string
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from rankwise.rerank.base import Reranker
from rankwise.rerank.llm import CausalLM, load_lm
from rankwise.rerank.scores import expected_score, log_softmax, two_token_firsts
from rankwise.retrieval.errors import InputError

CALIBRATIONS = ("none", "zscore")
LABELS = string.ascii_uppercase

SYSTEM = ("You are a search relevance judge. You rate every document of a group on the same absolute "
          "relevance scale, so that ratings from different groups can be compared.")
USER = ("Query: {query}\n\n"
        "Documents:\n{docs}\n\n"
        "Rate how relevant each document is to the query with an integer from 0 (not relevant) to "
        "{levels} (perfectly relevant). Judge each document on its own merits; the other documents "
        "are context, not competition. Answer with one line per document, in the form [A]: <score>.")


class GroupwiseReranker(Reranker):
    """Scores candidates in random groups of ``group_size``; see the module docstring.

    ``rounds`` shuffled partitions are scored and averaged; passages are cut to
    ``max_passage_tokens`` tokens; each document gets an integer score 0..``levels`` read as an
    expected value from the score token's logits.
    """

    name = "groupwise"

    def __init__(self, model: str | CausalLM, *, group_size: int = 5, rounds: int = 2,
                 max_passage_tokens: int = 100, levels: int = 10, batch_size: int = 4, seed: int = 0,
                 calibration: str = "none", share_prefix: bool = True, backend: Any = "torch") -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or not 2 <= group_size <= len(LABELS):
            raise InputError(f"group_size must be an integer within 2..{len(LABELS)}, got {group_size!r}",
                             field="group_size")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise InputError(f"rounds must be a positive integer, got {rounds!r}", field="rounds")
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 99:
            raise InputError(f"levels must be an integer within 1..99, got {levels!r}", field="levels")
        if isinstance(max_passage_tokens, bool) or not isinstance(max_passage_tokens, int) or max_passage_tokens < 1:
            raise InputError(f"max_passage_tokens must be a positive integer, got {max_passage_tokens!r}",
                             field="max_passage_tokens")
        if calibration not in CALIBRATIONS:
            raise InputError(f"unknown calibration {calibration!r}; choose from {', '.join(CALIBRATIONS)}",
                             field="calibration")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}", field="seed")
        self.group_size, self.rounds, self.levels = group_size, rounds, levels
        self.max_passage_tokens, self.seed, self.calibration = max_passage_tokens, seed, calibration
        self.lm = load_lm(model, backend=backend, batch_size=batch_size)
        self.share_prefix = bool(share_prefix)
        self._bare = self.lm.single_token_ids([str(d) for d in range(10)])
        self._sep, self._ids, self._whole = self._score_tokens()

    # --- the score token ----------------------------------------------------------------------

    def _score_tokens(self) -> tuple[str, list[int], bool]:
        """``(text after "[X]:", token ids, whole)``: how this tokenizer writes the answer ``[X]: <v>``.

        ``whole``: every answer 0..levels is one token after the prompt, and the ids are those tokens
        (one pass). Otherwise the ids are the digits 0..9 as the first answer token and a two-digit
        answer takes a second pass. Most tokenizers put a bare digit after ``"[X]: "``; some fold the
        space into the number (``" 7"``, even ``" 10"``, is one token), and then the prompt ends at
        ``"[X]:"``.
        """
        def enc(text: str) -> list[int]:
            return self.lm.tokenizer.encode(text, add_special_tokens=False)

        def tails(sep: str) -> list[list[int] | None]:
            prefix = enc(f"[A]{sep}")
            fulls = [enc(f"[A]: {v}") for v in range(self.levels + 1)]
            return [f[len(prefix):] if f[:len(prefix)] == prefix else None for f in fulls]

        seps = (": ", ":")
        found = {sep: tails(sep) for sep in seps}
        for sep in seps:
            if all(t is not None and len(t) == 1 for t in found[sep]):
                return sep, [t[0] for t in found[sep]], True
        for sep in seps:
            t = found[sep]
            if all(x is not None and len(x) == 1 for x in t[:10]) and all(
                    x == [t[v // 10][0], self._bare[v % 10]] for v, x in enumerate(t[10:], start=10)):
                return sep, [x[0] for x in t[:10]], False
        return ": ", self._bare, False  # an approximation: bare digits after "[X]: "

    # --- groups -------------------------------------------------------------------------------

    def plan(self, n: int, key: str = "") -> list[list[list[int]]]:
        """The groups for a list of ``n`` candidates: per round, a list of groups of candidate indices.

        Deterministic in ``(seed, n, key)``; :meth:`score` passes the query as ``key``, so lists of
        the same length do not all share one plan (a model's slot-position bias would otherwise hit
        the same retriever ranks in every query). Every candidate is in a group of every round.
        """
        if n <= 0:
            return []
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])
        g = self.group_size
        rounds = []
        for _ in range(self.rounds):
            order = [int(i) for i in rng.permutation(n)]
            groups = [order[i:i + g] for i in range(0, n, g)]
            short = g - len(groups[-1])
            if short and len(groups) > 1:  # fill the last group from the round's other candidates
                others = [i for grp in groups[:-1] for i in grp]
                groups[-1] += [int(i) for i in rng.choice(others, size=short, replace=False)]
            rounds.append(groups)
        return rounds

    # --- scoring ------------------------------------------------------------------------------

    def _context(self, query: str, docs: Sequence[str]) -> str:
        listed = "\n".join(f"[{LABELS[s]}] {' '.join(d.split())}" for s, d in enumerate(docs))
        return USER.format(query=query, docs=listed, levels=self.levels)

    def truncated(self, docs: Sequence[str]) -> list[str]:
        """``docs`` cut to ``max_passage_tokens`` tokens each (counted in ``stats``)."""
        self.stats.passages += len(docs)
        cut = []
        for d in docs:
            text, was_cut = self.lm.truncate(d, self.max_passage_tokens)
            self.stats.truncated += was_cut
            cut.append(text)
        return cut

    def slot_prompts(self, query: str, group: Sequence[str]) -> list[str]:
        """One prompt per document of a group (already truncated): the group context, then ``[X]:``."""
        user = self._context(query, group)
        return [self.lm.chat(user, system=SYSTEM, assistant_prefix=f"[{LABELS[s]}]{self._sep}")
                for s in range(len(group))]

    def group_tails(self, prompts: Sequence[str]) -> tuple[list[int], list[list[int]], list[tuple[int, int | None]]]:
        """``(context ids, tails, reads)`` of a group's slot prompts for one shared-prefix pass.

        The prompts are split at their longest common token prefix; each slot's tail is repeated
        once per first digit of the two-digit answers, with that digit appended (its last two
        positions are then read), and ``reads`` holds ``(slot, first digit or None)`` per tail.
        """
        ctx, slot_tails = self.lm.split_common_prefix(prompts)
        tails, reads = [], []
        for slot, tail in enumerate(slot_tails):
            for f in self._firsts() or [None]:
                tails.append(tail if f is None else tail + [self._ids[f]])
                reads.append((slot, f))
        return ctx, tails, reads

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        prompts: list[str] = []
        slots: list[tuple[int, int, int]] = []  # (list, candidate, group number) per prompt
        groups = 0
        for li, (query, docs) in enumerate(lists):
            self.stats.lists += 1
            cut = self.truncated(docs)
            for rnd in self.plan(len(docs), key=query):
                for group in rnd:
                    prompts.extend(self.slot_prompts(query, [cut[i] for i in group]))
                    slots.extend((li, i, groups) for i in group)
                    groups += 1
        self.stats.extra["groups"] = self.stats.extra.get("groups", 0) + groups
        out = [[0.0] * len(docs) for _, docs in lists]
        if not prompts:
            return out
        if self.share_prefix:
            sizes = Counter(g for _, _, g in slots)
            bounds = np.cumsum([0] + [sizes[g] for g in range(groups)])
            values = self._expected_shared([prompts[a:b] for a, b in zip(bounds[:-1], bounds[1:])], progress)
        else:
            values = self._expected(prompts, progress)
        if self.calibration == "zscore":
            values = _zscore(values, np.array([g for _, _, g in slots]), groups)
        sums: dict[tuple[int, int], float] = {}
        counts: dict[tuple[int, int], int] = {}
        for (li, i, _), v in zip(slots, values):
            sums[li, i] = sums.get((li, i), 0.0) + float(v)
            counts[li, i] = counts.get((li, i), 0) + 1
        for (li, i), total in sums.items():
            out[li][i] = total / counts[li, i]
        return out

    def _firsts(self) -> list[int]:
        """The first digits of the two-token answers (empty when every answer is one token)."""
        return two_token_firsts(self.levels, self._whole)

    def _combine(self, first_logits: np.ndarray, p_second: dict[int, np.ndarray]) -> np.ndarray:
        return expected_score(first_logits, p_second, self.levels, self._whole)

    def _expected(self, prompts: list[str], progress: bool) -> np.ndarray:
        """Expected scores with one :meth:`CausalLM.next_token_logits` row per slot prompt (and per first digit)."""
        first_logits = self.lm.next_token_logits(prompts, self._ids, progress=progress)
        self.stats.forward_passes += len(prompts)
        p_second = {}
        for first in self._firsts():
            lead = (" " if self._sep == ":" else "") + str(first)  # the first digit as it was written
            cont = self.lm.next_token_logits([p + lead for p in prompts], progress=False)  # full vocabulary
            self.stats.forward_passes += len(prompts)
            p_second[first] = np.exp(log_softmax(cont.astype(np.float64)))[:, self._bare]
        return self._combine(first_logits, p_second)

    def _expected_shared(self, groups: list[list[str]], progress: bool) -> np.ndarray:
        """Expected scores with ONE forward pass per group (see the module docstring).

        The slot prompts of a group are split at their longest common token prefix
        (:meth:`CausalLM.split_common_prefix`) into the shared context and G short slot tails
        (``[X]:`` ..., plus the first digit when two-digit answers need a second token), and
        :meth:`CausalLM.iter_tail_logits` runs each group as one sequence in which every tail sees
        the context and itself only.
        """
        firsts = self._firsts()
        items: list[tuple[list[int], list[list[int]]]] = []
        reads: list[list[tuple[int, int | None]]] = []  # per group: (slot, first digit or None) per tail
        slot = 0
        for prompts in groups:
            ctx, tails, read = self.group_tails(prompts)
            items.append((ctx, tails))
            reads.append([(slot + s, f) for s, f in read])
            slot += len(prompts)
        first_logits = np.empty((slot, len(self._ids)), dtype=np.float64)
        p_second = {f: np.empty((slot, 10), dtype=np.float64) for f in firsts}
        for g, tail_logits in self.lm.iter_tail_logits(items, last=2 if firsts else 1, progress=progress):
            for (slot_of, f), rows in zip(reads[g], tail_logits):
                if f is None:
                    first_logits[slot_of] = rows[-1, self._ids]
                    continue
                if f == firsts[0]:  # the token before the appended digit predicts the first answer token
                    first_logits[slot_of] = rows[-2, self._ids]
                p_second[f][slot_of] = np.exp(log_softmax(rows[-1].astype(np.float64)))[self._bare]
        self.stats.forward_passes += len(items)
        return self._combine(first_logits, p_second)


def _zscore(values: np.ndarray, group_of: np.ndarray, n_groups: int) -> np.ndarray:
    """``values`` standardised within each group (mean 0, std 1; all-equal groups give 0)."""
    out = np.zeros_like(values, dtype=np.float64)
    for g in range(n_groups):
        mask = group_of == g
        v = values[mask]
        sd = v.std()
        out[mask] = (v - v.mean()) / sd if sd > 1e-12 else 0.0
    return out
