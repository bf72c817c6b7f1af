"""eval.metrics: hand-computed values for the default measures and the explicit conventions."""

from __future__ import annotations

import math

import pytest

from rankwise.eval.metrics import DEFAULT_MEASURES, evaluate, evaluate_per_query, parse_measures
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run

# Graded qrels. A document counts as relevant for R, RR and AP when its grade is >= 1.
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"d5": 1},
    "q3": {"d6": 1},  # judged, but absent from the run: scores 0
}
RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "dx": 0.7, "d2": 0.6},  # ranks: d3(0) d1(2) dx(-) d2(1); d4 not found
    "q2": {"da": 0.9, "db": 0.8, "d5": 0.7},  # the one relevant document at rank 3
    "q9": {"d1": 1.0},  # not judged: ignored
}

L2 = math.log2
# nDCG@10, trec_eval style (gain = grade, discount = log2(rank + 1)):
#   q1: DCG  = 0/log2(2) + 2/log2(3) + 0/log2(4) + 1/log2(5) = 1.26186 + 0.43068 = 1.69254
#       IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4)             = 2 + 0.63093 + 0.5 = 3.13093
#       nDCG = 1.69254 / 3.13093 = 0.54059
#   q2: DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5
#   q3: 0
NDCG_Q1 = (2 / L2(3) + 1 / L2(5)) / (2 + 1 / L2(3) + 1 / L2(4))
NDCG = (NDCG_Q1 + 0.5 + 0.0) / 3  # = (0.54059 + 0.5 + 0) / 3 = 0.34686
# R@100: q1 finds d1, d2 of {d1, d2, d4} = 2/3; q2 1/1; q3 0            -> (2/3 + 1 + 0) / 3 = 5/9
RECALL = 5 / 9
# RR@10: q1 first relevant at rank 2 = 1/2; q2 at rank 3 = 1/3; q3 0     -> (1/2 + 1/3) / 3 = 5/18
RR = 5 / 18
# AP@100: q1 relevant at ranks 2 and 4: (1/2 + 2/4) / 3 relevant = 1/3
#         q2 relevant at rank 3: (1/3) / 1 = 1/3; q3 0                  -> (1/3 + 1/3 + 0) / 3 = 2/9
AP = 2 / 9


def test_hand_computed_default_measures():
    assert NDCG == pytest.approx(0.34686, abs=1e-5)
    got = evaluate(RUN, QRELS)
    assert list(got) == list(DEFAULT_MEASURES)
    assert got["nDCG@10"] == pytest.approx(NDCG, abs=1e-9)
    assert got["R@100"] == pytest.approx(RECALL, abs=1e-9)
    assert got["RR@10"] == pytest.approx(RR, abs=1e-9)
    assert got["AP@100"] == pytest.approx(AP, abs=1e-9)


def test_run_object_gives_the_same_values():
    run = Run({q: list(docs.items()) for q, docs in RUN.items()})
    assert evaluate(run, QRELS) == pytest.approx(evaluate(RUN, QRELS))


def test_per_query_values_and_missing_query_scores_zero():
    per = evaluate_per_query(RUN, QRELS)
    assert set(per) == set(DEFAULT_MEASURES)
    for values in per.values():
        assert list(values) == ["q1", "q2", "q3"]  # every judged query, none of the unjudged
    assert per["nDCG@10"]["q1"] == pytest.approx(NDCG_Q1)
    assert per["nDCG@10"]["q2"] == pytest.approx(0.5)
    assert per["R@100"]["q1"] == pytest.approx(2 / 3)
    assert per["RR@10"]["q2"] == pytest.approx(1 / 3)
    assert per["AP@100"]["q1"] == pytest.approx(1 / 3)
    assert all(per[m]["q3"] == 0.0 for m in DEFAULT_MEASURES)


def test_average_is_over_the_given_qrels():
    # Dropping q3 from the qrels (not from the run) changes the denominator from 3 to 2.
    only_judged_in_run = {q: QRELS[q] for q in ("q1", "q2")}
    got = evaluate(RUN, only_judged_in_run, ["RR@10"])
    assert got["RR@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert evaluate({}, QRELS, ["nDCG@10"]) == {"nDCG@10": 0.0}


def test_ignore_identical_ids():
    qrels = {"q2": {"d5": 1}}
    run = {"q2": {"q2": 5.0, "d5": 1.0}}  # the query retrieves itself at rank 1
    assert evaluate(run, qrels, ["RR@10"])["RR@10"] == pytest.approx(1.0)  # dropped: d5 at rank 1
    kept = evaluate(run, qrels, ["RR@10"], ignore_identical_ids=False)
    assert kept["RR@10"] == pytest.approx(0.5)  # kept: d5 at rank 2


def test_ties_are_broken_the_same_way_for_every_measure():
    # Tied scores: trec_eval ranks by doc id descending, so "b" comes before "a".
    run = {"q": {"a": 1.0, "b": 1.0}}
    got = evaluate(run, {"q": {"a": 1}}, ["RR@10", "AP@100"])
    assert got == pytest.approx({"RR@10": 0.5, "AP@100": 0.5})


def test_measure_names_and_objects():
    import ir_measures

    assert [str(m) for m in parse_measures(["nDCG@10", ir_measures.P @ 5, "nDCG@10"])] == ["nDCG@10", "P@5"]
    assert list(evaluate(RUN, QRELS, "P@5")) == ["P@5"]
    # P@5: q1 has d1, d2 relevant in its top 4 = 2/5; q2 1/5; q3 0 -> (2/5 + 1/5) / 3 = 0.2
    assert evaluate(RUN, QRELS, "P@5")["P@5"] == pytest.approx(0.2)


@pytest.mark.parametrize("bad", ["nDCG@ten", "Foo@10", "nDCG(gains=)@10", ""])
def test_bad_measure_name(bad):
    with pytest.raises(InputError) as info:
        evaluate(RUN, QRELS, [bad])
    assert info.value.field == "measure"
    assert repr(bad) in str(info.value)


def test_empty_qrels_refused():
    with pytest.raises(InputError, match="no judgements"):
        evaluate(RUN, {})
