"""Fusion: RRF and min-max interpolation against hand-computed values."""

from __future__ import annotations

import pytest

from rankwise.retrieval.fusion import interpolate, normalize, rrf
from rankwise.retrieval.hybrid import HybridRetriever
from rankwise.retrieval.run import Run

A = Run({"q": [("d1", 10.0), ("d2", 8.0), ("d3", 2.0)]})
B = Run({"q": [("d3", 0.9), ("d1", 0.5), ("d4", 0.1)]})


def test_rrf_hand_computed():
    fused = rrf([A, B], k=60)
    scores = dict(fused["q"])
    assert scores["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["d3"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["d2"] == pytest.approx(1 / 62)
    assert scores["d4"] == pytest.approx(1 / 63)
    assert [d for d, _ in fused["q"]] == ["d1", "d3", "d2", "d4"]
    assert dict(rrf([A, B], k=60, depth=1)["q"]) == pytest.approx({"d1": 1 / 61, "d3": 1 / 61})


def test_normalize_and_interpolate_hand_computed():
    assert dict(normalize(A)["q"]) == pytest.approx({"d1": 1.0, "d2": 0.75, "d3": 0.0})
    fused = dict(interpolate(A, B, alpha=0.3)["q"])
    # B normalized: d3 = 1, d1 = (0.5 - 0.1) / 0.8 = 0.5, d4 = 0
    assert fused["d1"] == pytest.approx(0.3 * 1.0 + 0.7 * 0.5)
    assert fused["d2"] == pytest.approx(0.3 * 0.75)
    assert fused["d3"] == pytest.approx(0.3 * 0.0 + 0.7 * 1.0)
    assert fused["d4"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        interpolate(A, B, alpha=1.5)


def test_hybrid_retriever_fuses_its_two_retrievers():
    class Fixed:
        def __init__(self, run):
            self.run = run

        def search(self, queries, k=100, progress=True):
            return self.run.top(k)

    hybrid = HybridRetriever(Fixed(A), Fixed(B), fusion="rrf")
    assert [d for d, _ in hybrid.search({"q": "text"}, k=2)["q"]] == ["d1", "d3"]
    hybrid = HybridRetriever(Fixed(A), Fixed(B), fusion="interpolation", alpha=0.3)
    # d1: 0.3 * 1 + 0.7 * 0.5 = 0.65 < d3: 0.3 * 0 + 0.7 * 1 = 0.7
    assert hybrid.search({"q": "text"}, k=1)["q"] == [("d3", pytest.approx(0.7))]
