"""PG-Rank (Plackett-Luce policy gradient): exact gradient by enumeration, baseline variance, reward by hand, trainers."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from rankwise.retrieval.errors import InputError
from rankwise.training.losses.pg_rank import (CrossEncoderPGRankLoss, PGRankLoss, advantages, ndcg, pg_rank_objective,
                                     plackett_luce_log_prob, sample_rankings)
from rankwise.training.settings import PGRankSettings
from tests._helpers import assert_reranks_with, settings, weights, write_tuples

SCORES = torch.tensor([[0.5, -0.3, 1.2, 0.1]])
LABELS = torch.tensor([[2.0, 0.0, 1.0, 0.0]])
T = 0.7


def exact_gradient(scores: torch.Tensor, labels: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """d E[nDCG@k] / d scores, the expectation summed over all 24 permutations of 4 items."""
    perms = torch.tensor(list(itertools.permutations(range(scores.shape[1]))))[None]
    x = scores.clone().requires_grad_(True)
    p = plackett_luce_log_prob(x, perms, temperature).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    (grad,) = torch.autograd.grad((p * ndcg(perms, labels, k)).sum(), x)
    return grad


def estimate(scores, labels, pg: PGRankSettings, seed: int) -> torch.Tensor:
    """The PG-Rank estimate of d E[reward] / d scores (minus the surrogate loss's gradient)."""
    x = scores.clone().requires_grad_(True)
    loss, _ = pg_rank_objective(x, labels, pg, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(-loss, x)
    return grad


@pytest.mark.parametrize("baseline", ["loo", "none"])
def test_gradient_estimate_matches_the_exact_gradient_of_the_expected_reward(baseline):
    """4 candidates, 24 permutations enumerated: 1000 estimates of S=64 samples (64,000 rankings) are averaged;
    tolerance: every component within 4 standard errors of the mean estimate, and within 0.01 absolute."""
    exact = exact_gradient(SCORES, LABELS, 3, T)[0]
    pg = PGRankSettings(samples=64, reward="ndcg@3", temperature=T, baseline=baseline)
    batch = SCORES.expand(1000, -1).contiguous()  # 1000 independent estimates in one batch
    x = batch.clone().requires_grad_(True)
    loss, _ = pg_rank_objective(x, LABELS.expand(1000, -1), pg, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(-loss * 1000, x)  # the loss is a mean over the 1000 rows
    mean, se = grad.mean(0), grad.std(0) / math.sqrt(grad.shape[0])
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-6), (mean, exact, se)
    assert torch.all((mean - exact).abs() < 0.01), (mean, exact)
    assert exact.abs().max() > 0.05  # the test has something to detect


def test_leave_one_out_baseline_lowers_the_variance():
    """Measured: 400 independent S=8 estimates each way; the trace of their covariance drops with the baseline."""
    def spread(baseline: str) -> float:
        pg = PGRankSettings(samples=8, reward="ndcg@3", temperature=T, baseline=baseline)
        grads = torch.stack([estimate(SCORES, LABELS, pg, seed)[0] for seed in range(400)])
        return grads.var(0).sum().item()

    loo, none = spread("loo"), spread("none")
    assert loo < 0.5 * none, (loo, none)


def test_logged_variance_tracks_the_measured_one():
    pg_loo = PGRankSettings(samples=8, reward="ndcg@3", temperature=T, baseline="loo")
    pg_none = PGRankSettings(samples=8, reward="ndcg@3", temperature=T, baseline="none")
    batch, labels = SCORES.expand(400, -1), LABELS.expand(400, -1)
    _, loo = pg_rank_objective(batch, labels, pg_loo, generator=torch.Generator().manual_seed(1))
    _, none = pg_rank_objective(batch, labels, pg_none, generator=torch.Generator().manual_seed(1))
    assert 0 < loo["variance"].item() < none["variance"].item()


def test_ndcg_reward_by_hand():
    labels = torch.tensor([[2.0, 0.0, 1.0, 0.0]])
    ranking = torch.tensor([[[1, 2, 0, 3]]])  # gains 0, 1, 3, 0 at ranks 1..4
    dcg = 0 / math.log2(2) + 1 / math.log2(3) + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg(ranking, labels, None).item() == pytest.approx(dcg / ideal, rel=1e-6)
    assert ndcg(ranking, labels, 2).item() == pytest.approx((1 / math.log2(3)) / ideal, rel=1e-6)
    assert ndcg(torch.tensor([[[0, 2, 1, 3]]]), labels, 10).item() == pytest.approx(1.0)
    assert ndcg(ranking, torch.zeros(1, 4), 10).item() == 0.0  # no gain: 0, not nan
    teacher = torch.tensor([[5.0, 3.0, 4.0, 3.0]])  # linear gains, shifted: 2, 0, 1, 0
    assert ndcg(ranking, teacher, None, gain="linear").item() == pytest.approx(
        (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3)), rel=1e-6)


def test_log_probability_by_hand_and_sampling_frequencies():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    ranking = torch.tensor([[[2, 0, 1]]])
    e = np.exp([1.0, 0.0, -1.0])
    by_hand = math.log(e[2] / e.sum()) + math.log(e[0] / (e[0] + e[1]))
    assert plackett_luce_log_prob(s, ranking).item() == pytest.approx(by_hand, rel=1e-6)
    draws = sample_rankings(s, 20000, generator=torch.Generator().manual_seed(0))[0]
    firsts = torch.bincount(draws[:, 0], minlength=3).float() / 20000
    np.testing.assert_allclose(firsts.numpy(), e / e.sum(), atol=0.015)  # the first item ~ softmax(scores)


def test_leave_one_out_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.5]])
    np.testing.assert_allclose(advantages(r, "loo").numpy(), [[1 - 0.25, 0 - 0.75, 0.5 - 0.5]])
    np.testing.assert_allclose(advantages(r, "none").numpy(), r.numpy())


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="reward"):
        PGRankSettings(reward="map@10")
    with pytest.raises(InputError, match="samples"):
        PGRankSettings(samples=1)
    with pytest.raises(InputError, match="temperature"):
        PGRankSettings(temperature=0)
    with pytest.raises(InputError, match="baseline"):
        PGRankSettings(baseline="mean")
    assert PGRankSettings(reward="ndcg").cutoff is None and PGRankSettings().cutoff == 10


def test_bi_encoder_loss_ranks_every_document_of_the_batch():
    class Dot(torch.nn.Module):
        similarity_fn_name = "dot"

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    n = torch.tensor([[0.5, 0.5], [0.7, 0.1]])
    loss = PGRankLoss(Dot(), PGRankSettings(samples=4), scale=1.0)
    torch.manual_seed(0)
    got = loss.compute_loss_from_embeddings([q, p, n])
    torch.manual_seed(0)
    labels = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    want, _ = pg_rank_objective(q @ torch.cat([p, n]).T, labels, PGRankSettings(samples=4))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    logs = loss.pop_logs()
    assert set(logs) == {"pg_reward", "pg_variance"} and loss.pop_logs() == {}


def test_cross_encoder_loss_reads_its_groups():
    from tests._helpers import FakeCrossEncoder

    table = {("q", "a"): 2.0, ("q", "b"): 0.0, ("q", "c"): 1.0, ("r", "a"): 0.5, ("r", "b"): 1.5, ("r", "c"): -1.0}
    loss = CrossEncoderPGRankLoss(FakeCrossEncoder(table), PGRankSettings(samples=6, reward="ndcg"))
    labels = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])]
    torch.manual_seed(3)
    got = loss([["q", "r"], [["a", "b", "c"], ["a", "b", "c"]]], labels)
    torch.manual_seed(3)
    want, _ = pg_rank_objective(torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, -1.0]]), torch.stack(labels),
                                PGRankSettings(samples=6, reward="ndcg"))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def _logged(out) -> list[dict]:
    return [json.loads(x) for x in (out / "training_log.jsonl").read_text().splitlines()]


def test_bi_encoder_trains_with_pg_rank_and_loads_back(tmp_path, tiny_encoder):
    from sentence_transformers import SentenceTransformer

    from rankwise.training.bi_encoder import train_bi_encoder
    from rankwise.training.data import TrainingInput

    tuples, _ = write_tuples(tmp_path)
    result = train_bi_encoder(str(tiny_encoder), TrainingInput(tuples), tmp_path / "bi", loss="pg-rank",
                              settings=settings(), pg_rank=PGRankSettings(samples=4), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert any("pg_variance" in e and "pg_reward" in e for e in _logged(tmp_path / "bi"))
    assert SentenceTransformer(str(tmp_path / "bi")).encode(["heart"]).shape == (1, 32)
    summary = json.loads((tmp_path / "bi" / "rankwise_training.json").read_text())
    assert summary["pg_rank"] == {"samples": 4, "reward": "ndcg@10", "temperature": 1.0, "baseline": "loo"}


@pytest.mark.parametrize("teacher", [False, True])
def test_cross_encoder_trains_with_pg_rank_and_reranks(tmp_path, tiny_encoder, teacher):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.training.cross_encoder import train_cross_encoder
    from rankwise.training.data import TrainingInput

    tuples, scores = write_tuples(tmp_path)
    data = TrainingInput(tuples, teacher=scores if teacher else None)
    result = train_cross_encoder(str(tiny_encoder), data, tmp_path / "ce", loss="pg-rank", settings=settings(),
                                 pg_rank=PGRankSettings(samples=4, reward="ndcg@2"), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert any("pg_variance" in e for e in _logged(tmp_path / "ce"))
    embedding = "embeddings.word_embeddings.weight"
    before = next(v for k, v in weights(tiny_encoder).items() if k.endswith(embedding))
    after = next(v for k, v in weights(tmp_path / "ce").items() if k.endswith(embedding))
    assert not np.allclose(before, after)  # PG-Rank's gradient reached the model
    docs = ["heart paper", "bone notes", "x"]
    ranking = CrossEncoderReranker(str(tmp_path / "ce")).rerank("heart", docs)
    assert_reranks_with(tmp_path / "ce", ranking, "heart", docs)  # the reranker ranks with the trained model


def test_cross_encoder_listmle_trains(tmp_path, tiny_encoder):
    from rankwise.training.cross_encoder import train_cross_encoder
    from rankwise.training.data import TrainingInput

    tuples, _ = write_tuples(tmp_path)
    result = train_cross_encoder(str(tiny_encoder), TrainingInput(tuples), tmp_path / "ce", loss="listmle",
                                 settings=settings(), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)


def test_cli_pg_rank_options(tmp_path, tiny_encoder, capsys):
    from rankwise.cli import main

    tuples, _ = write_tuples(tmp_path)
    main(["train", "cross-encoder", "--model", str(tiny_encoder), "--triples", str(tuples), "--loss", "pg-rank",
          "--pg-samples", "3", "--pg-reward", "ndcg@2", "--pg-temperature", "0.5", "--pg-baseline", "none",
          "--out", str(tmp_path / "ce"), "--max-steps", "2", "--batch-size", "4", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    summary = json.loads((tmp_path / "ce" / "rankwise_training.json").read_text())
    assert summary["pg_rank"] == {"samples": 3, "reward": "ndcg@2", "temperature": 0.5, "baseline": "none"}
    with pytest.raises(SystemExit) as done:
        main(["train", "bi-encoder", "--model", str(tiny_encoder), "--triples", str(tuples), "--loss", "pg-rank",
              "--pg-reward", "map", "--out", str(tmp_path / "bi")])
    assert done.value.code == 2 and "reward" in capsys.readouterr().err
