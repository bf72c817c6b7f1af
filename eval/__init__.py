"""Evaluation: the BEIR dataset registry and resolver, and metrics over ir-measures."""

from rankwise.eval.datasets import BEIR_DATASETS, BeirDataset, BeirSource, resolve_dataset
from rankwise.eval.metrics import DEFAULT_MEASURES, evaluate, evaluate_per_query, parse_measures
from rankwise.eval.systems import parse_system
from rankwise.eval import irds, msmarco  # noqa: F401, E402 - register the irds: scheme and the MS MARCO folder layout

__all__ = [
    "BEIR_DATASETS",
    "DEFAULT_MEASURES",
    "BeirDataset",
    "BeirSource",
    "Experiment",
    "ExperimentResult",
    "evaluate",
    "evaluate_per_query",
    "parse_measures",
    "parse_system",
    "resolve_dataset",
]


def __getattr__(name: str) -> object:
    """``Experiment`` and ``ExperimentResult`` load on first use (they need the 'experiments' extra)."""
    if name in ("Experiment", "ExperimentResult"):
        from rankwise.eval import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module 'rankwise.eval' has no attribute {name!r}")
