"""Hybrid retrieval: a sparse and a dense retriever fused by RRF or score interpolation."""

from __future__ import annotations

from collections.abc import Mapping

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.fusion import interpolate, rrf
from rankwise.retrieval.retriever import Composable, Retriever
from rankwise.retrieval.run import Run

FUSIONS = ("rrf", "interpolation")


__all__ = ["FUSIONS", "HybridRetriever", "Retriever", "fuse"]  # Retriever lives in retrieval/retriever.py


class HybridRetriever(Composable):
    """Fuse two retrievers' top-``depth`` lists: ``rrf`` (k=60) or min-max ``interpolation`` (weight ``alpha`` on the first)."""

    def __init__(self, first: Retriever, second: Retriever, *, fusion: str = "rrf", rrf_k: int = 60,
                 alpha: float = 0.5, depth: int = 1000) -> None:
        fuse(Run(), Run(), fusion=fusion)  # validates the name
        self.first, self.second = first, second
        self.fusion, self.rrf_k, self.alpha, self.depth = fusion, rrf_k, alpha, depth

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
        depth = max(k, self.depth)
        a = self.first.search(queries, k=depth, progress=progress)
        b = self.second.search(queries, k=depth, progress=progress)
        return self.fuse(a, b).top(k)

    def fuse(self, a: Run, b: Run) -> Run:
        return fuse(a, b, fusion=self.fusion, rrf_k=self.rrf_k, alpha=self.alpha, depth=self.depth)


def fuse(a: Run, b: Run, *, fusion: str = "rrf", rrf_k: int = 60, alpha: float = 0.5, depth: int = 1000) -> Run:
    """Fuse two runs already retrieved: ``rrf`` or ``interpolation`` (weight ``alpha`` on ``a``)."""
    if fusion not in FUSIONS:
        raise InputError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}", field="fusion")
    if fusion == "rrf":
        return rrf([a, b], k=rrf_k, depth=depth)
    return interpolate(a, b, alpha=alpha, depth=depth)
