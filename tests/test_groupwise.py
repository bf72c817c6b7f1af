"""GroupwiseReranker: group plans, permutations, comparable scores across groups, seeding, errors."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from rankwise.rerank.groupwise import SYSTEM as GW_SYSTEM
from rankwise.rerank.groupwise import GroupwiseReranker
from rankwise.retrieval.errors import InputError


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from rankwise.rerank.llm import CausalLM
    from rankwise.testing import build_tiny_causal_lm

    return CausalLM(str(build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-llm")), batch_size=8)


def docs(n: int) -> list[str]:
    return [f"doc{i} the protein cell gene {'heart ' * (i % 4)}".strip() for i in range(n)]


def scored_doc(prompt: str) -> str:
    """The text of the document a slot prompt asks about (the one labelled by the assistant prefix)."""
    label = re.search(r"\[([A-Z])\]:\s*$", prompt).group(1)
    return re.search(rf"^\[{label}\] (.*)$", prompt, re.M).group(1)


def fake_logits(score_of):
    """A ``next_token_logits`` that puts all the mass of a slot prompt on the digit ``score_of(doc)``."""
    calls = []

    def next_token_logits(prompts, token_ids=None, progress=False):
        calls.append(len(prompts))
        out = np.zeros((len(prompts), len(token_ids)), dtype=np.float32)
        for row, p in enumerate(prompts):
            out[row, score_of(scored_doc(p))] = 30.0
        return out

    return next_token_logits, calls


def test_plan_covers_every_candidate_each_round(lm):
    for n, g, rounds in [(7, 5, 2), (23, 5, 2), (20, 5, 3), (3, 5, 2), (1, 4, 1), (10, 5, 1)]:
        plan = GroupwiseReranker(lm, group_size=g, rounds=rounds).plan(n)
        assert len(plan) == rounds
        appearances = Counter()
        for groups in plan:
            assert set(i for grp in groups for i in grp) == set(range(n))  # every candidate, every round
            for grp in groups:
                assert len(grp) == min(g, n) and len(set(grp)) == len(grp)
                appearances.update(grp)
        assert all(appearances[i] >= rounds for i in range(n))
    assert GroupwiseReranker(lm).plan(0) == []


def test_seeding(lm):
    assert GroupwiseReranker(lm, seed=3).plan(23) == GroupwiseReranker(lm, seed=3).plan(23)
    assert GroupwiseReranker(lm, seed=3).plan(23) != GroupwiseReranker(lm, seed=4).plan(23)
    first, second = GroupwiseReranker(lm, rounds=2).plan(23)
    assert first != second  # the rounds are different shuffles
    # the query is part of the seed: reproducible per query, different across queries
    reranker = GroupwiseReranker(lm, seed=3)
    assert reranker.plan(23, key="q1") == GroupwiseReranker(lm, seed=3).plan(23, key="q1")
    assert reranker.plan(23, key="q1") != reranker.plan(23, key="q2")
    with pytest.raises(InputError, match="seed"):
        GroupwiseReranker(lm, seed=-1)


@pytest.mark.parametrize("n", [7, 23])
def test_rerank_is_a_permutation_with_the_real_tiny_model(lm, n):
    reranker = GroupwiseReranker(lm, group_size=5, rounds=2, max_passage_tokens=4)
    ranking = reranker.rerank("protein in the heart", docs(n))
    assert sorted(i for i, _ in ranking) == list(range(n))
    assert all(0.0 <= s <= 10.0 for _, s in ranking)
    groups = sum(len(rnd) for rnd in reranker.plan(n))
    assert reranker.stats.forward_passes == groups == reranker.stats.extra["groups"]  # one pass per group
    assert reranker.stats.passages == n and reranker.stats.lists == 1
    assert reranker.stats.truncated == n  # each passage is cut once, however many groups it is in


@pytest.mark.parametrize("levels", [5, 10])
def test_one_pass_per_group_equals_the_separate_slot_prompts(lm, levels):
    lists = [("protein in the heart", docs(13)), ("gene", docs(4)), ("empty", []), ("one", docs(1))]
    shared = GroupwiseReranker(lm, levels=levels, max_passage_tokens=6)
    plain = GroupwiseReranker(lm, levels=levels, max_passage_tokens=6, share_prefix=False)
    a, b = shared.score(lists), plain.score(lists)
    assert [len(x) for x in a] == [13, 4, 0, 1]
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-5)
    prompts = sum(len(grp) for _, d in lists for rnd in shared.plan(len(d)) for grp in rnd)
    assert plain.stats.forward_passes == prompts  # " 10" is one token for the tiny tokenizer: one read each
    assert shared.stats.forward_passes == shared.stats.extra["groups"] == sum(
        len(rnd) for _, d in lists for rnd in shared.plan(len(d)))


def test_one_pass_per_group_reads_two_digit_answers(lm):
    import torch

    reranker = GroupwiseReranker(lm, group_size=3, rounds=1, levels=12)
    assert not reranker._whole and reranker._firsts() == [1]
    candidates = ["needle in the heart", "hay", "straw and protein"]
    scores = reranker.score([("needle", candidates)])[0]
    assert reranker.stats.forward_passes == 1
    # the reference: each slot prompt on its own, then with its first digit "1" appended
    group = reranker.plan(3, key="needle")[0][0]
    user = reranker._context("needle", [candidates[i] for i in group])
    expected = {}
    with torch.inference_mode():
        for s, i in enumerate(group):
            prompt = lm.chat(user, system=GW_SYSTEM, assistant_prefix=f"[{'ABC'[s]}]{reranker._sep}")
            ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            first = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
            second = lm.model(input_ids=torch.tensor([ids + [reranker._ids[1]]])).logits[0, -1]
            p_second = second.log_softmax(-1)[reranker._bare].exp().numpy()[None].astype(np.float64)
            expected[i] = reranker._combine(first[reranker._ids].numpy()[None], {1: p_second})[0]
    assert scores == pytest.approx([expected[i] for i in range(3)], abs=1e-5)
    assert all(0.0 <= x <= 12.0 for x in scores)


def test_empty_list(lm):
    reranker = GroupwiseReranker(lm)
    assert reranker.rerank("q", []) == []
    assert reranker.score([("q", [])]) == [[]]
    assert reranker.stats.forward_passes == 0


def test_planted_document_ranks_first(lm, monkeypatch):
    reranker = GroupwiseReranker(lm, group_size=5, rounds=2, levels=9, share_prefix=False)
    fake, calls = fake_logits(lambda d: 9 if "needle" in d else 2)
    monkeypatch.setattr(reranker.lm, "next_token_logits", fake)
    candidates = docs(23)
    candidates[17] = "a needle in the haystack"
    ranking = reranker.rerank("find the needle", candidates)
    assert ranking[0][0] == 17 and ranking[0][1] == pytest.approx(9.0)
    assert all(s == pytest.approx(2.0) for _, s in ranking[1:])
    assert calls == [reranker.stats.forward_passes]  # one batched call


def test_scores_are_comparable_across_groups(lm, monkeypatch):
    reranker = GroupwiseReranker(lm, group_size=5, rounds=2, levels=9, share_prefix=False)
    candidates = docs(23)
    candidates[3] = "first needle"
    candidates[20] = "second needle"
    plan = reranker.plan(23, key="needle")
    assert any(not any(3 in grp and 20 in grp for grp in groups) for groups in plan)  # apart at least once
    # every document has an absolute score of its own, whatever its neighbours
    own = {d: (9 if "needle" in d else i % 9) for i, d in enumerate(candidates)}
    fake, _ = fake_logits(lambda d: own[d])
    monkeypatch.setattr(reranker.lm, "next_token_logits", fake)
    scores = reranker.score([("needle", candidates)])[0]
    assert scores[3] == pytest.approx(9.0) and scores[20] == pytest.approx(9.0)  # a tie across groups
    assert scores == pytest.approx([float(own[d]) for d in candidates], abs=1e-6)
    assert [i for i, _ in reranker.rerank("needle", candidates)[:2]] == [3, 20]


def test_batches_across_queries_in_one_call(lm, monkeypatch):
    reranker = GroupwiseReranker(lm, group_size=4, rounds=2, levels=5, share_prefix=False)
    fake, calls = fake_logits(lambda d: 5 if "needle" in d else 1)
    monkeypatch.setattr(reranker.lm, "next_token_logits", fake)
    lists = [("q1", docs(9)), ("q2", ["needle"] + docs(6)), ("q3", [])]
    scores = reranker.score(lists)
    assert [len(s) for s in scores] == [9, 7, 0]
    assert scores[1][0] == pytest.approx(5.0) and max(scores[1][1:]) == pytest.approx(1.0)
    expected = sum(len(grp) for n in (9, 7) for groups in reranker.plan(n) for grp in groups)
    assert calls == [expected] and reranker.stats.forward_passes == expected


def test_zscore_calibration(lm, monkeypatch):
    reranker = GroupwiseReranker(lm, group_size=5, rounds=2, levels=9, calibration="zscore", share_prefix=False)
    fake, _ = fake_logits(lambda d: 9 if "needle" in d else 3)
    monkeypatch.setattr(reranker.lm, "next_token_logits", fake)
    candidates = docs(12)
    candidates[5] = "needle"
    ranking = reranker.rerank("needle", candidates)
    assert ranking[0][0] == 5 and ranking[0][1] > 0 > ranking[-1][1]


def test_score_token_follows_the_prefix(lm):
    # the tiny tokenizer folds the space into the number (" 7", " 10" are one token each), so the
    # prompt ends at "[X]:" and the eleven answers 0..10 are read in one pass
    reranker = GroupwiseReranker(lm, levels=10)
    assert reranker._sep == ":" and reranker._whole and len(reranker._ids) == 11
    enc = lm.tokenizer.encode
    for v in range(11):
        assert enc(f"[B]{reranker._sep}", add_special_tokens=False) + [reranker._ids[v]] == enc(
            f"[B]: {v}", add_special_tokens=False)


def test_two_digit_answers_take_a_second_pass(lm, monkeypatch):
    reranker = GroupwiseReranker(lm, group_size=3, rounds=1, levels=12, share_prefix=False)
    assert not reranker._whole  # " 11" is " 1" + "1" for the tiny tokenizer
    eos = lm.tokenizer.eos_token_id

    def fake(prompts, token_ids=None, progress=False):
        if token_ids is not None:  # first pass: every document starts its answer with "1"
            out = np.zeros((len(prompts), len(token_ids)), dtype=np.float32)
            out[:, 1] = 30.0
            return out
        out = np.zeros((len(prompts), len(lm.tokenizer)), dtype=np.float32)  # after "1": "2" or the end
        for row, p in enumerate(prompts):
            out[row, reranker._bare[2] if "needle" in scored_doc(p[:-1]) else eos] = 30.0
        return out

    monkeypatch.setattr(reranker.lm, "next_token_logits", fake)
    scores = reranker.score([("q", ["needle", "hay", "straw"])])[0]
    assert scores == pytest.approx([12.0, 1.0, 1.0], abs=1e-6)
    assert reranker.stats.forward_passes == 2 * 3


def test_bad_settings(lm):
    with pytest.raises(InputError, match="group_size"):
        GroupwiseReranker(lm, group_size=1)
    with pytest.raises(InputError, match="group_size"):
        GroupwiseReranker(lm, group_size=27)
    with pytest.raises(InputError, match="rounds"):
        GroupwiseReranker(lm, rounds=0)
    with pytest.raises(InputError, match="levels"):
        GroupwiseReranker(lm, levels=0)
    with pytest.raises(InputError, match="calibration"):
        GroupwiseReranker(lm, calibration="minmax")
