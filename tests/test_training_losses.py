"""Every training loss against a value computed by hand from its formula.

The losses sentence-transformers implements are built here as rankwise builds them, through the loss registry
(``get_loss(kind, name).build(LossContext(...))``): what is tested is that ``--loss NAME`` with rankwise's
settings (scale, similarity, gold order) computes the formula the name stands for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rankwise.training.losses.adore import ADORELoss, rank_gain
from rankwise.training.losses.curriculum import CurriculumLoss, CurriculumSchedule
from rankwise.training.losses.registry import BI_ENCODER, CROSS_ENCODER, LossContext, get_loss
from rankwise.training.losses.star import STARLoss
from tests._helpers import FakeCrossEncoder


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


class DotModel(nn.Module):
    """Stands in for a SentenceTransformer where a loss only reads its similarity name."""

    similarity_fn_name = "dot"


# --- bi-encoder losses -------------------------------------------------------------------------

Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P = torch.tensor([[0.8, 0.1], [0.3, 0.9]])
N = torch.tensor([[0.5, 0.5], [0.9, 0.2]])


def test_star_loss_by_hand():
    loss = STARLoss(DotModel(), scale=1.0, random_weight=0.5, gather_across_devices=False)
    got = loss.compute_loss_from_embeddings([Q, P, N]).item()
    pool = torch.cat([P, N])  # rows: p0, p1, n0, n1
    expected = 0.0
    for i in range(2):
        s = (pool @ Q[i]).tolist()
        pos, hard = s[i], s[2 + i]
        randoms = [s[j] for j in range(4) if j not in (i, 2 + i)]
        expected += softplus(hard - pos) + 0.5 * sum(softplus(r - pos) for r in randoms) / len(randoms)
    assert got == pytest.approx(expected / 2, rel=1e-6)


def test_contrastive_is_infonce_over_in_batch_and_hard_negatives(tiny_encoder):
    from sentence_transformers import SentenceTransformer

    loss = get_loss(BI_ENCODER, "contrastive").build(LossContext(SentenceTransformer(str(tiny_encoder)), scale=10.0))
    got = loss.compute_loss_from_embeddings([Q, P, N], None).item()
    docs = torch.cat([P, N])
    cos = torch.nn.functional.normalize(Q, dim=1) @ torch.nn.functional.normalize(docs, dim=1).T * 10.0
    expected = np.mean([-(cos[i, i] - torch.logsumexp(cos[i], 0)).item() for i in range(2)])
    assert got == pytest.approx(expected, rel=1e-5)


def test_margin_mse_and_kl_with_scaled_similarity(tiny_encoder):
    from sentence_transformers import SentenceTransformer

    context = LossContext(SentenceTransformer(str(tiny_encoder)), scale=5.0, cosine=True)
    teacher = torch.tensor([[3.0, 1.0], [0.5, 2.0]])
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b).numpy()  # noqa: E731
    s_pos, s_neg = 5.0 * cos(Q, P), 5.0 * cos(Q, N)
    mse = get_loss(BI_ENCODER, "margin-mse").build(context).compute_loss_from_embeddings(
        [Q, P, N], teacher[:, 0] - teacher[:, 1]).item()
    assert mse == pytest.approx(np.mean(((s_pos - s_neg) - (teacher[:, 0] - teacher[:, 1]).numpy()) ** 2), rel=1e-5)
    kl = get_loss(BI_ENCODER, "kl").build(context).compute_loss_from_embeddings([Q, P, N], teacher).item()
    student = np.stack([s_pos, s_neg], 1)
    log_q = student - np.log(np.exp(student).sum(1, keepdims=True))
    p = np.exp(teacher.numpy()) / np.exp(teacher.numpy()).sum(1, keepdims=True)
    assert kl == pytest.approx(float((p * (np.log(p) - log_q)).sum(1).mean()), rel=1e-5)


# --- ADORE ---------------------------------------------------------------------------------------

class TinyIndex:
    """The two methods of DenseIndex that ADORE reads, over an exact inner-product FAISS index."""

    def __init__(self, vectors: np.ndarray) -> None:
        import faiss

        self.vectors = vectors.astype(np.float32)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(self.vectors)
        self.manifest = {"encoder": {"similarity": "dot"}}

    def search(self, q, k):
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)

    def reconstruct(self, rows):
        return self.vectors[np.asarray(rows)]


def test_rank_gain():
    ranks = torch.tensor([1, 2, 4, 11])
    assert rank_gain(ranks, "mrr", None).tolist() == pytest.approx([1, 0.5, 0.25, 1 / 11])
    assert rank_gain(ranks, "mrr", 10).tolist() == pytest.approx([1, 0.5, 0.25, 0])
    assert rank_gain(ranks, "ndcg", None).tolist() == pytest.approx([1 / math.log2(r + 1) for r in (1, 2, 4, 11)])


def test_adore_loss_by_hand():
    docs = np.array([[0.9, 0.0], [0.7, 0.1], [0.2, 0.2], [0.0, 1.0]])  # query (1, 0) ranks d0 > d1 > d2 > d3
    loss = ADORELoss(DotModel(), TinyIndex(docs), positives=[[2]], depth=3, metric="mrr", scale=2.0)
    q = torch.tensor([[1.0, 0.0]])
    got = loss.compute_loss_from_embeddings(q, torch.tensor([0])).item()
    # retrieved top 3: d0, d1, d2 (the positive, rank 3); negatives d0 (rank 1), d1 (rank 2)
    s = docs @ np.array([1.0, 0.0])
    expected = sum(abs(1 / 3 - 1 / r) * softplus(2.0 * (s[d] - s[2])) for d, r in ((0, 1), (1, 2)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_adore_positive_below_the_retrieved_list_ranks_depth_plus_one():
    docs = np.array([[0.9, 0.0], [0.7, 0.1], [0.0, 1.0]])
    loss = ADORELoss(DotModel(), TinyIndex(docs), positives=[[2]], depth=2, metric="mrr", scale=1.0)
    got = loss.compute_loss_from_embeddings(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item()
    s = docs @ np.array([1.0, 0.0])
    expected = sum(abs(1 / 3 - 1 / r) * softplus(s[d] - s[2]) for d, r in ((0, 1), (1, 2)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_adore_gradient_moves_only_the_query():
    docs = np.array([[0.9, 0.0], [0.2, 0.2], [0.0, 1.0]])
    loss = ADORELoss(DotModel(), TinyIndex(docs), positives=[[2]], depth=3, scale=1.0)
    q = torch.tensor([[1.0, 0.2]], requires_grad=True)
    loss.compute_loss_from_embeddings(q, torch.tensor([0])).backward()
    assert q.grad is not None and q.grad[0, 1] < 0  # descending the loss raises the positive's coordinate


# --- cross-encoder losses ------------------------------------------------------------------------

TABLE = {("q1", "a"): 2.0, ("q1", "b"): -1.0, ("q1", "c"): 0.5, ("q2", "d"): 0.3, ("q2", "e"): 1.2, ("q2", "f"): -0.4}


def test_bce_by_hand():
    loss = get_loss(CROSS_ENCODER, "bce").build(LossContext(FakeCrossEncoder(TABLE)))
    got = loss([["q1", "q1", "q2"], ["a", "b", "e"]], torch.tensor([1.0, 0.0, 0.0])).item()
    z = [2.0, -1.0, 1.2]
    y = [1, 0, 0]
    expected = np.mean([-(t * math.log(1 / (1 + math.exp(-v))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-v))))
                        for v, t in zip(z, y)])
    assert got == pytest.approx(expected, rel=1e-6)


def test_cross_encoder_margin_mse_by_hand():
    loss = get_loss(CROSS_ENCODER, "margin-mse").build(LossContext(FakeCrossEncoder(TABLE), teacher_labels=True))
    got = loss([["q1", "q2"], ["a", "e"], ["b", "f"]], torch.tensor([2.0, 1.0])).item()
    assert got == pytest.approx(np.mean([((2.0 + 1.0) - 2.0) ** 2, ((1.2 + 0.4) - 1.0) ** 2]), rel=1e-6)


def test_lce_by_hand():
    loss = get_loss(CROSS_ENCODER, "lce").build(LossContext(FakeCrossEncoder(TABLE)))
    got = loss([["q1", "q2"], ["a", "d"], ["b", "e"], ["c", "f"]], torch.tensor([0.0, 0.0])).item()
    expected = []
    for q, pos, negs in (("q1", "a", "bc"), ("q2", "d", "ef")):
        s = np.array([TABLE[q, pos]] + [TABLE[q, n] for n in negs])
        expected.append(-(s[0] - np.log(np.exp(s).sum())))
    assert got == pytest.approx(np.mean(expected), rel=1e-6)


def test_listnet_by_hand():
    loss = get_loss(CROSS_ENCODER, "listnet").build(LossContext(FakeCrossEncoder(TABLE)))
    labels = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 1.0])]
    got = loss([["q1", "q2"], [["a", "b", "c"], ["d", "e", "f"]]], labels).item()
    expected = []
    for q, docs, y in (("q1", "abc", labels[0]), ("q2", "def", labels[1])):
        s = np.array([TABLE[q, d] for d in docs])
        p = np.exp(y.numpy()) / np.exp(y.numpy()).sum()
        expected.append(-(p * (s - np.log(np.exp(s).sum()))).sum())
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["plistmle", "listmle"])
@pytest.mark.parametrize("teacher_labels", [False, True])
def test_listmle_gold_order_is_the_input_order_unless_a_teacher_scores(name, teacher_labels):
    """rankwise's choice: with qrels labels (positive first) the gold order is the input order; with a
    teacher's scores it is the order of the scores. PListMLE weights position r by 2^(n-r) - 1 (normalized)."""
    loss = get_loss(CROSS_ENCODER, name).build(LossContext(FakeCrossEncoder(TABLE), teacher_labels=teacher_labels))
    labels = torch.tensor([0.0, 2.0, 1.0])  # a teacher would rank c, then b, then a
    got = loss([["q1"], [["a", "c", "b"]]], [labels]).item()
    gold = "acb" if not teacher_labels else "cba"
    s = [TABLE["q1", d] for d in gold]
    logp = [s[i] - math.log(sum(math.exp(x) for x in s[i:])) for i in range(3)]
    w = [2 ** (3 - r) - 1 for r in (1, 2, 3)] if name == "plistmle" else [1, 1, 1]
    if name == "plistmle":
        w = [x / sum(w) for x in w]
    assert got == pytest.approx(-sum(a * b for a, b in zip(w, logp)), rel=1e-5)


# --- curriculum ----------------------------------------------------------------------------------

def test_curriculum_schedule_anneals_to_uniform():
    schedule = CurriculumSchedule(fraction=0.5)
    d = torch.tensor([0.0, 0.5, 1.0])
    assert schedule.weights(d).tolist() == pytest.approx([1.0, 0.5, 0.0])
    schedule.progress = 0.25
    assert schedule.weights(d).tolist() == pytest.approx([1.0, 0.75, 0.5])
    schedule.progress = 0.5
    assert schedule.weights(d).tolist() == pytest.approx([1.0, 1.0, 1.0])
    schedule.progress = 0.9
    assert schedule.weights(d).tolist() == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        CurriculumSchedule(fraction=0.0)


def test_curriculum_weights_per_sample_bce():
    from sentence_transformers.cross_encoder import losses

    schedule = CurriculumSchedule(fraction=1.0, progress=0.5)
    loss = CurriculumLoss(losses.BinaryCrossEntropyLoss(FakeCrossEncoder(TABLE)), schedule)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (label, difficulty)
    got = loss([["q1", "q1"], ["a", "b"]], labels).item()
    l_a = -math.log(1 / (1 + math.exp(-2.0)))
    l_b = -math.log(1 - 1 / (1 + math.exp(1.0)))
    assert got == pytest.approx((1.0 * l_a + 0.5 * l_b) / 2, rel=1e-6)


def test_curriculum_weights_per_query_lce():
    from rankwise.training.losses.registry import CROSS_ENCODER, LossContext, get_loss

    schedule = CurriculumSchedule(fraction=1.0, progress=0.0)
    loss = CurriculumLoss(get_loss(CROSS_ENCODER, "lce").build(LossContext(FakeCrossEncoder(TABLE))), schedule)
    got = loss([["q1", "q2"], ["a", "d"], ["b", "e"]], torch.tensor([0.0, 1.0])).item()  # q2 is hard: weight 0
    s = np.array([TABLE["q1", "a"], TABLE["q1", "b"]])
    assert got == pytest.approx(-(s[0] - np.log(np.exp(s).sum())) / 2, rel=1e-6)


def test_curriculum_refuses_a_loss_without_per_sample_values():
    from sentence_transformers.cross_encoder import losses

    with pytest.raises(ValueError, match="per-sample"):
        CurriculumLoss(losses.PListMLELoss(FakeCrossEncoder(TABLE)), CurriculumSchedule())


def test_loss_registry_builds_every_loss_and_checks_what_each_needs(tiny_encoder, tiny_cross_encoder):
    """One registry for both trainers: every loss builds on its kind's model; needs are enforced."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoder

    from rankwise.retrieval.errors import InputError
    from rankwise.training.bi_encoder import BI_ENCODER_LOSSES
    from rankwise.training.cross_encoder import CROSS_ENCODER_LOSSES
    from rankwise.training.losses.registry import BI_ENCODER, CROSS_ENCODER, LossContext, check_loss, get_loss
    from rankwise.training.settings import PGRankSettings

    assert BI_ENCODER_LOSSES == ("contrastive", "star", "adore", "margin-mse", "kl", "pg-rank")
    assert CROSS_ENCODER_LOSSES == ("bce", "lce", "margin-mse", "listnet", "plistmle", "listmle", "pg-rank")
    models = {BI_ENCODER: SentenceTransformer(str(tiny_encoder), device="cpu"),
              CROSS_ENCODER: CrossEncoder(str(tiny_cross_encoder), num_labels=1, device="cpu")}
    for kind, names in ((BI_ENCODER, BI_ENCODER_LOSSES), (CROSS_ENCODER, CROSS_ENCODER_LOSSES)):
        for name in names:
            entry = get_loss(kind, name)
            assert entry.kind == kind and entry.name == name and entry.paper
            if name == "adore":  # built over its fixed index by train_bi_encoder, never from the registry
                with pytest.raises(InputError):
                    entry.build(LossContext(models[kind]))
                continue
            module = entry.build(LossContext(models[kind], scale=20.0, pg_rank=PGRankSettings()))
            assert isinstance(module, torch.nn.Module) and module.model is models[kind]
    with pytest.raises(InputError) as err:
        get_loss(CROSS_ENCODER, "contrastive")
    assert err.value.field == "loss" and "bce, lce, margin-mse" in str(err.value)
    with pytest.raises(InputError) as err:
        check_loss(get_loss(CROSS_ENCODER, "listnet"), teacher=True, curriculum="bm25")
    assert "use it with bce, lce or margin-mse, not listnet" in str(err.value)
    with pytest.raises(InputError) as err:
        check_loss(get_loss(BI_ENCODER, "kl"), teacher=False, curriculum="none")
    assert err.value.field == "teacher_scores"
    check_loss(get_loss(BI_ENCODER, "margin-mse"), teacher=True, curriculum="bm25")  # allowed: no error
