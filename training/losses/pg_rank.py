"""PG-Rank: the Plackett-Luce policy gradient of a ranking metric (REINFORCE, leave-one-out baseline).

Gao, Zhang, Liang, Lu, Zhou and Joachims, "Policy-Gradient Training of Language Models for
Ranking" (Neural PG-Rank), 2023. A query's candidate scores ``s`` define a Plackett-Luce
distribution over rankings, ``p(pi) = prod_i softmax(s / T)[pi_i]`` over the items not yet placed.
Training maximises the expected utility ``E_pi[nDCG@k(pi, labels)]`` with the score-function
(REINFORCE) estimator

    grad E[r] ~ 1/S sum_s (r(pi_s) - b_s) grad log p(pi_s)

over ``S`` rankings sampled *in batch, on the scores' device*: the argsort of ``s / T`` plus
Gumbel noise is an exact Plackett-Luce sample (the Gumbel-max trick applied position by
position). ``b_s`` is the leave-one-out baseline, the mean reward of the other ``S - 1`` samples
(Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"), which keeps the
estimator unbiased and lowers its variance; ``baseline="none"`` drops it. ``log p(pi)`` is exact:
the sum over positions of the log-softmax of the remaining items (a reversed log-cum-sum-exp).

The loss returned is the surrogate ``-1/(B S) sum (r - b) log p``, whose gradient is minus the
estimate. Each call also measures the estimator's variance: the per-sample gradient terms
``(r_s - b_s) grad_s log p(pi_s)`` (w.r.t. the scores, obtained exactly by one small extra backward
through the score-level operations, never through the model) give, per query, the trace of their
sample covariance divided by ``S``; its mean over queries is logged as ``pg_variance`` beside the
mean reward ``pg_reward`` (see :meth:`PGRankLoss.pop_logs`).

Two sentence-transformers losses use it: :class:`PGRankLoss` for bi-encoders (candidates: every
positive and mined negative of the batch; label 1 for the query's own positive) and
:class:`CrossEncoderPGRankLoss` for cross-encoders (candidates: the query's own documents with
their labels, graded or a teacher's scores). The LLM groupwise trainer calls
:func:`pg_rank_objective` on its per-document scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankwise.retrieval.errors import InputError
from rankwise.training.losses.stats import LoggedStats, WithLoggedStats
from rankwise.training.settings import PGRankSettings

GAINS = ("exp", "linear")


def sample_rankings(scores: Tensor, samples: int, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
    """``[B, S, n]`` rankings (item indices, best first) drawn from Plackett-Luce(``scores / T``) by Gumbel perturbation."""
    b, n = scores.shape
    u = torch.rand((b, samples, n), device=scores.device, generator=generator, dtype=torch.float32)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    return torch.argsort(scores.detach().float().unsqueeze(1) / temperature + gumbel, dim=-1, descending=True)


def plackett_luce_log_prob(scores: Tensor, rankings: Tensor, temperature: float = 1.0) -> Tensor:
    """Exact ``log p(ranking)`` under Plackett-Luce(``scores / T``): ``[B, n]`` scores, ``[B, S, n]`` rankings -> ``[B, S]``.

    ``log p(pi) = sum_i (s[pi_i] - logsumexp_{j >= i} s[pi_j])`` with ``s = scores / T``.
    """
    s = scores.float() / temperature
    if s.dim() == 2:
        s = s.unsqueeze(1).expand(-1, rankings.shape[1], -1)
    ordered = s.gather(-1, rankings)
    remaining = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    return (ordered - remaining).sum(-1)


def ndcg(rankings: Tensor, labels: Tensor, k: int | None = None, gain: str = "exp") -> Tensor:
    """nDCG@k of each ranking: ``[B, S, n]`` rankings, ``[B, n]`` labels -> ``[B, S]`` in [0, 1].

    ``gain="exp"``: ``2^label - 1`` (graded relevance); ``"linear"``: the label itself, shifted so each
    list's lowest label is 0 (teacher scores as labels). Discount ``1 / log2(rank + 1)``; a list with
    no gain scores 0.
    """
    labels = labels.float()
    gains = torch.pow(2.0, labels) - 1.0 if gain == "exp" else labels - labels.min(dim=-1, keepdim=True).values
    n = labels.shape[-1]
    cut = n if k is None else min(k, n)
    discount = torch.zeros(n, device=labels.device)
    discount[:cut] = 1.0 / torch.log2(torch.arange(cut, device=labels.device, dtype=torch.float32) + 2.0)
    dcg = (gains.unsqueeze(1).expand(-1, rankings.shape[1], -1).gather(-1, rankings) * discount).sum(-1)
    ideal = (gains.sort(dim=-1, descending=True).values * discount).sum(-1, keepdim=True)
    return torch.where(ideal > 0, dcg / ideal.clamp(min=1e-12), torch.zeros_like(dcg))


def advantages(rewards: Tensor, baseline: str = "loo") -> Tensor:
    """``r_s - b_s`` per sample: ``b_s`` the mean of the other samples' rewards (``"loo"``), or 0 (``"none"``)."""
    if baseline == "none":
        return rewards
    s = rewards.shape[-1]
    if s < 2:
        raise InputError("the leave-one-out baseline needs at least 2 samples", field="samples")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (s - 1)


def pg_rank_objective(scores: Tensor, labels: Tensor, settings: PGRankSettings | None = None, *, gain: str = "exp",
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """``(surrogate loss, stats)`` for ``[B, n]`` scores and labels under ``settings``; see the module docstring.

    ``stats``: ``reward`` (mean nDCG of the sampled rankings) and ``variance`` (the estimator's
    variance w.r.t. the scores, mean over queries), both detached.
    """
    settings = settings or PGRankSettings()
    temperature = settings.temperature
    rankings = sample_rankings(scores, settings.samples, temperature, generator)
    rewards = ndcg(rankings, labels, settings.cutoff, gain)
    adv = advantages(rewards, settings.baseline)
    log_p = plackett_luce_log_prob(scores, rankings, temperature)
    loss = -(adv * log_p).mean()
    return loss, {"reward": rewards.mean().detach(), "variance": _variance(scores, rankings, adv, temperature)}


def _variance(scores: Tensor, rankings: Tensor, adv: Tensor, temperature: float) -> Tensor:
    """Mean over queries of ``trace(Cov_s[(r_s - b_s) grad log p(pi_s)]) / S`` w.r.t. the scores."""
    b, s, n = rankings.shape
    if s < 2:
        return torch.zeros((), device=scores.device)
    with torch.enable_grad():
        leaf = scores.detach().float().unsqueeze(1).expand(b, s, n).clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(plackett_luce_log_prob(leaf, rankings, temperature).sum(), leaf)
    terms = adv.detach().unsqueeze(-1) * grads  # [B, S, n]
    return (terms.var(dim=1).sum(-1) / s).mean().detach()


class _PGRank(WithLoggedStats, nn.Module):
    """Settings and the logged statistics shared by the bi-encoder and cross-encoder losses."""

    def __init__(self, model: Any, settings: PGRankSettings | None = None) -> None:
        super().__init__()
        self.model = model
        self.settings = settings or PGRankSettings()
        self.logged = LoggedStats()

    def objective(self, scores: Tensor, labels: Tensor, gain: str = "exp") -> Tensor:
        loss, stats = pg_rank_objective(scores, labels, settings=self.settings, gain=gain)
        self.logged.record(**{f"pg_{key}": value for key, value in stats.items()})
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return dict(vars(self.settings))

    @property
    def citation(self) -> str:
        return "Gao et al., Policy-Gradient Training of Language Models for Ranking (Neural PG-Rank), 2023"


class PGRankLoss(_PGRank):
    """PG-Rank for a sentence-transformers bi-encoder: (query, positive, negative_1..k) columns.

    Each query ranks every document of the batch (all positives and mined negatives, in-batch
    ones included); its own positive has label 1, the rest 0. Scores are the similarity times
    ``scale`` (cosine lies in [-1, 1]), then divided by the temperature.
    """

    def __init__(self, model: Any, settings: PGRankSettings | None = None, scale: float = 20.0) -> None:
        super().__init__(model, settings)
        self.scale = scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features))

    def compute_loss_from_embeddings(self, embeddings: list[Tensor]) -> Tensor:
        queries, docs = embeddings[0], torch.cat(embeddings[1:], dim=0)  # docs: positives, then negatives by column
        if (self.model.similarity_fn_name or "cosine") == "cosine":
            queries, docs = F.normalize(queries, dim=-1), F.normalize(docs, dim=-1)
        scores = queries @ docs.T * self.scale
        labels = torch.zeros_like(scores)
        rows = torch.arange(scores.shape[0], device=scores.device)
        labels[rows, rows] = 1.0
        return self.objective(scores, labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "scale": self.scale}


class CrossEncoderPGRankLoss(_PGRank):
    """PG-Rank for a sentence-transformers ``CrossEncoder``: (query, [doc_1..doc_n]) with n labels each.

    Labels are graded (gain ``2^l - 1``) or, with ``gain="linear"``, a teacher's scores. Every
    query of a batch must have the same number of documents.
    """

    def __init__(self, model: Any, settings: PGRankSettings | None = None, gain: str = "exp") -> None:
        super().__init__(model, settings)
        if gain not in GAINS:
            raise InputError(f"unknown gain {gain!r}; choose from {', '.join(GAINS)}", field="gain")
        self.gain = gain

    def forward(self, inputs: list[Any], labels: list[Tensor], **kwargs: Any) -> Tensor:
        from sentence_transformers.util import batch_to_device

        queries, docs_list = inputs
        sizes = {len(docs) for docs in docs_list}
        if len(sizes) != 1:
            raise ValueError(f"PG-Rank needs the same number of documents per query in a batch, got {sorted(sizes)}")
        pairs = [(q, d) for q, docs in zip(queries, docs_list) for d in docs]
        tokens = batch_to_device(self.model.preprocess(pairs, **kwargs), self.model.device)
        scores = self.model(tokens)["scores"].view(len(queries), -1).float()
        return self.objective(scores, torch.stack([torch.as_tensor(x) for x in labels]).to(scores.device), self.gain)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "gain": self.gain}
