"""Groupwise training of the LLM reranker (GroupRank's paradigm): a group of candidates in one pass.

GroupRank ("GroupRank: A Groupwise Reranking Paradigm Driven by Reinforcement Learning", 2025)
trains a model that reads the query with a group of documents and gives each an absolute score,
with a ranking reward. Here the scores are exactly those :class:`rankwise.rerank.groupwise.GroupwiseReranker`
reads at inference, made differentiable:

* each training list (:mod:`rankwise.training.candidates`) is cut into the reranker's own groups
  (:meth:`~rerank.groupwise.GroupwiseReranker.plan`, one round: a shuffle seeded by ``seed`` and
  the query, the short last group filled up); a group whose labels are all equal is skipped;
* a group's slot prompts (:meth:`~rerank.groupwise.GroupwiseReranker.slot_prompts`) are split into
  the shared context and one short tail per slot
  (:meth:`~rerank.groupwise.GroupwiseReranker.group_tails`); the context runs once and its key/value
  cache, repeated for every tail, lets all tails run as one batch -- one shared-prefix pass with
  gradients, each tail seeing the context and itself only, as at inference;
* each document's score is the expected integer answer 0..``levels`` under the answer-token
  distribution (:func:`expected_score`, the torch form of :func:`rankwise.rerank.scores.expected_score`,
  two-digit answers included);
* the group's scores are trained with ListNet (:func:`rankwise.training.losses.listnet.listnet_loss`) or the
  PG-Rank reward (:func:`rankwise.training.losses.pg_rank.pg_rank_objective`: nDCG@k of Plackett-Luce
  rankings sampled from the scores, REINFORCE with a leave-one-out baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rankwise.rerank.groupwise import GroupwiseReranker
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.scores import two_token_firsts
from rankwise.retrieval.errors import InputError
from rankwise.training.candidates import CandidateSource, RunInput
from rankwise.training.llm import LoRASettings, model_device, train_llm_reranker
from rankwise.training.losses.listnet import listnet_loss
from rankwise.training.losses.pg_rank import pg_rank_objective
from rankwise.training.losses.stats import LoggedStats, WithLoggedStats
from rankwise.training.runner import TrainResult
from rankwise.training.settings import GROUPWISE_LOSSES, PGRankSettings, TrainSettings

Group = tuple[Any, ...]  # GroupwiseReranker.group_tails: (context ids, slot tails, read positions)


def expected_score(first_logits: torch.Tensor, p_second: dict[int, torch.Tensor], levels: int,
                   whole: bool = False) -> torch.Tensor:
    """:func:`rankwise.rerank.scores.expected_score` on torch tensors (differentiable): ``sum_k k * p(k)`` per row."""
    p_first = first_logits.float().softmax(-1)
    if whole:
        return p_first @ torch.arange(levels + 1, dtype=p_first.dtype, device=p_first.device)
    values = torch.arange(10, dtype=p_first.dtype, device=p_first.device)
    if levels < 10:
        p = p_first[:, : levels + 1]
        return (p / p.sum(1, keepdim=True)) @ values[: levels + 1]
    expected = p_first @ values
    for first in two_token_firsts(levels):
        seconds = [v % 10 for v in range(10, levels + 1) if v // 10 == first]
        p_two = p_second[first][:, seconds].to(p_first.dtype)
        stop = (1.0 - p_two.sum(1)).clamp(0.0, 1.0)
        two_values = torch.tensor([first * 10 + s for s in seconds], dtype=p_first.dtype, device=p_first.device)
        expected = expected + p_first[:, first] * (p_two @ two_values + stop * first - first)
    return expected


class GroupwiseObjective(WithLoggedStats):
    """ListNet or PG-Rank on the groupwise scores of a batch of candidate lists."""

    def __init__(self, lm: CausalLM, *, loss: str = "listnet", group_size: int = 5, levels: int = 10,
                 max_passage_tokens: int = 100, seed: int = 0, pg_rank: PGRankSettings | None = None,
                 gain: str = "exp") -> None:
        self.reranker = GroupwiseReranker(lm, group_size=group_size, rounds=1, levels=levels, seed=seed,
                                          max_passage_tokens=max_passage_tokens)
        self.loss, self.pg_rank, self.gain = loss, pg_rank or PGRankSettings(), gain
        self.logged = LoggedStats()

    def groups(self, row: dict[str, Any]) -> list[tuple[list[str], list[float]]]:
        """The informative groups of one list: ``(documents, labels)`` per group of the reranker's plan."""
        docs, labels = row["docs"], row["labels"]
        out = []
        for group in self.reranker.plan(len(docs), key=row["query"])[0]:
            group_labels = [float(labels[i]) for i in group]
            if len(set(group_labels)) > 1:
                out.append(([docs[i] for i in group], group_labels))
        return out

    def tokenized(self, query: str, docs: Sequence[str]) -> Group:
        """One group's shared context, slot tails and read positions, tokenized (no model needed)."""
        r = self.reranker
        return r.group_tails(r.slot_prompts(query, r.truncated(docs)))

    def prepare(self, row: dict[str, Any]) -> list[tuple[Group, list[float]]]:
        """What the collate function computes in a DataLoader worker: each informative group tokenized."""
        return [(self.tokenized(row["query"], docs), labels) for docs, labels in self.groups(row)]

    def scores(self, model: Any, query: str, docs: Sequence[str]) -> torch.Tensor:
        """The group's expected scores, one shared-prefix pass with gradients (see the module docstring)."""
        return self.scores_of(model, self.tokenized(query, docs))

    def scores_of(self, model: Any, group: Group) -> torch.Tensor:
        """:meth:`scores` of a group :meth:`tokenized` beforehand."""
        r = self.reranker
        ctx, tails, reads = group
        device = model_device(model)
        cache = model(input_ids=torch.tensor([ctx], device=device), use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(tails))
        width = max(len(t) for t in tails)
        ids = torch.full((len(tails), width), r.lm.tokenizer.pad_token_id, dtype=torch.long)
        for i, tail in enumerate(tails):  # right padding: a tail's own positions never see it
            ids[i, :len(tail)] = torch.tensor(tail)
        mask = torch.ones((len(tails), len(ctx) + width), dtype=torch.long, device=device)
        logits = model(input_ids=ids.to(device), attention_mask=mask, past_key_values=cache).logits.float()
        firsts = r._firsts()
        first_rows: dict[int, torch.Tensor] = {}
        p_second: dict[int, dict[int, torch.Tensor]] = {f: {} for f in firsts}
        for i, (slot, f) in enumerate(reads):
            last = logits[i, len(tails[i]) - 1]
            if f is None:
                first_rows[slot] = last[r._ids]
                continue
            if f == firsts[0]:  # the token before the appended digit predicts the first answer token
                first_rows[slot] = logits[i, len(tails[i]) - 2][r._ids]
            p_second[f][slot] = last.softmax(-1)[r._bare]
        slots = sorted(first_rows)
        return expected_score(torch.stack([first_rows[s] for s in slots]),
                              {f: torch.stack([rows[s] for s in slots]) for f, rows in p_second.items()},
                              r.levels, r._whole)

    def __call__(self, model: Any, rows: Sequence[dict[str, Any]],
                 prepared: Sequence[list[tuple[Group, list[float]]]] | None = None) -> torch.Tensor:
        prepared = prepared if prepared is not None else [self.prepare(row) for row in rows]
        groups = [group for row in prepared for group in row]
        if not groups:
            return torch.zeros((), device=model_device(model), requires_grad=True)
        scores = torch.stack([self.scores_of(model, tokens) for tokens, _ in groups])
        labels = torch.tensor([labels for _, labels in groups], device=scores.device)
        if self.loss == "listnet":
            loss = listnet_loss(scores, labels)
            self.logged.record(groups=len(groups))
        else:
            loss, stats = pg_rank_objective(scores, labels, self.pg_rank, gain=self.gain)
            self.logged.record(groups=len(groups), pg_reward=stats["reward"], pg_variance=stats["variance"])
        self.logged.record(mean_score=scores.detach().mean())
        return loss


def train_groupwise(
    model: str,
    source: CandidateSource,
    out: str | Path,
    *,
    loss: str = "listnet",
    group_size: int = 5,
    levels: int = 10,
    candidates: int | None = None,
    max_passage_tokens: int = 100,
    pg_rank: PGRankSettings | None = None,
    lora: LoRASettings | None = None,
    settings: TrainSettings | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a causal LM as a groupwise reranker on ``source``; the model is saved in ``out``.

    ``loss``: ``listnet`` or ``pg-rank`` (``pg_rank`` settings); ``group_size`` and ``levels`` as
    the reranker's (use the same at inference: ``groupwise:OUT,group_size=G,levels=L``);
    ``candidates``: candidates kept per list (default all). Teacher scores are linear PG-Rank
    gains, qrels grades exponential ones. Resumes from ``out/checkpoints``.
    """
    if loss not in GROUPWISE_LOSSES:
        raise InputError(f"unknown groupwise loss {loss!r}; choose from {', '.join(GROUPWISE_LOSSES)}", field="loss")
    settings = settings or TrainSettings()
    pg_rank = pg_rank or PGRankSettings()
    gain = "linear" if not isinstance(source, RunInput) and source.teacher is not None else "exp"
    options: dict[str, Any] = {"loss": loss, "group_size": group_size, "levels": levels, "candidates": candidates,
                               "max_passage_tokens": max_passage_tokens}
    if loss == "pg-rank":
        options.update(pg_rank=vars(pg_rank), gain=gain)
    return train_llm_reranker(
        "groupwise", model, source, out, size=candidates, options=options, settings=settings,
        lora=lora or LoRASettings(), force=force, progress=progress, callbacks=callbacks,
        objective=lambda lm: GroupwiseObjective(lm, loss=loss, group_size=group_size, levels=levels,
                                                max_passage_tokens=max_passage_tokens, seed=settings.seed,
                                                pg_rank=pg_rank, gain=gain))
