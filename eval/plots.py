"""Plots of a comparison (matplotlib, Agg backend: PNG files, no display needed).

* :func:`per_query_delta`: for each system against the baseline, one bar per query of the
  per-query difference in a measure, sorted, gains above the axis and losses below (the
  per-topic difference plot of TREC overviews and of Sakai's *Laboratory Experiments in IR*).
* :func:`quality_cost`: one point per system, a measure against its query-time cost (queries per
  second, log scale), the trade-off an engineer chooses from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import atomic_path

if TYPE_CHECKING:
    import pandas as pd

GAIN, LOSS, TIE = "#2a9d58", "#c8553d", "#999999"
DELTA_PNG = "per-query-delta.png"
COST_PNG = "quality-cost.png"
_SAFE = re.compile(r"[^A-Za-z0-9.+_-]+")


def file_label(name: str) -> str:
    """A system name as a file name (``bm25>>cross-encoder:./ce`` -> ``bm25_cross-encoder_._ce``)."""
    return _SAFE.sub("_", name).strip("_") or "run"


def comparison_plots(table: pd.DataFrame, values: pd.DataFrame, folder: Path, *, costs: Mapping[str, float] | None = None,
                     measure: str | None = None, title: str | None = None) -> dict[str, str]:
    """:func:`per_query_delta` (two systems or more) and :func:`quality_cost` (systems with a cost in
    seconds for all their queries) of a comparison table of :mod:`rankwise.eval.compare`, into ``folder``."""
    measure = measure or str(values["measure"].iloc[0])
    written: dict[str, str] = {}
    if len(table) > 1:
        written["per_query_delta"] = str(per_query_delta(values, folder / DELTA_PNG, baseline=table.attrs["baseline"],
                                                         measure=measure, title=title))
    queries = table.attrs["queries"]
    points = {s: (float(table.loc[s, (measure, "mean")]), queries / costs[s]) for s in table.index
              if costs and costs.get(s)}
    if points:
        written["quality_cost"] = str(quality_cost(points, folder / COST_PNG, measure=measure, title=title))
    return written


def _pyplot():  # type: ignore[no-untyped-def]
    matplotlib = requires("matplotlib", "experiments", "Plotting")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def per_query_delta(values: pd.DataFrame, path: str | Path, *, baseline: str, measure: str | None = None,
                    title: str | None = None) -> Path:
    """Write sorted per-query difference bars (system minus ``baseline``) to ``path`` (PNG).

    ``values`` is the long per-query frame of :func:`rankwise.eval.compare.per_query_values`; ``measure``
    defaults to its first. One panel per system other than the baseline.
    """
    measure = measure or str(values["measure"].iloc[0])
    if measure not in set(values["measure"]):
        raise InputError(f"no per-query values of {measure!r} to plot", field="measure")
    wide = values[values["measure"] == measure].pivot(index="query_id", columns="system", values="value")
    if baseline not in wide:
        raise InputError(f"the baseline {baseline!r} is not one of the runs", field="baseline")
    systems = [s for s in dict.fromkeys(values["system"]) if s != baseline]
    if not systems:
        raise InputError("a per-query delta plot needs a system besides the baseline")
    plt = _pyplot()
    fig, axes = plt.subplots(len(systems), 1, figsize=(8, 2.4 * len(systems) + 0.6), squeeze=False, sharex=True)
    for ax, system in zip(axes[:, 0], systems):
        delta = (wide[system] - wide[baseline]).sort_values(ascending=False).to_numpy()
        colors = [GAIN if d > 1e-12 else LOSS if d < -1e-12 else TIE for d in delta]
        ax.bar(range(len(delta)), delta, width=1.0, color=colors, linewidth=0)
        ax.axhline(0, color="black", linewidth=0.6)
        wins, losses = int((delta > 1e-12).sum()), int((delta < -1e-12).sum())
        ax.set_title(f"{system} vs {baseline}: mean {delta.mean():+.4f}, {wins} better, {losses} worse, "
                     f"{len(delta) - wins - losses} tied", fontsize=9, loc="left")
        ax.set_ylabel(f"Δ {measure}")
        ax.set_xlim(-0.5, len(delta) - 0.5)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("queries, sorted by difference")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def quality_cost(points: Mapping[str, tuple[float, float]], path: str | Path, *, measure: str = "nDCG@10",
                 title: str | None = None) -> Path:
    """Write a quality-against-speed scatter to ``path`` (PNG): ``points`` is
    ``{system: (quality, queries per second)}``; the speed axis is logarithmic."""
    usable = {name: (q, qps) for name, (q, qps) in points.items() if qps and qps > 0}
    if not usable:
        raise InputError("no system has a timing to plot quality against cost")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (quality, qps) in usable.items():
        ax.scatter([qps], [quality], s=40, zorder=3)
        ax.annotate(name, (qps, quality), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    speeds = [qps for _, qps in usable.values()]
    ax.set_xlim(min(speeds) / 1.5, max(speeds) * 2.0)  # room for the names
    ax.set_xlabel("queries per second (search and reranking, log scale)")
    ax.set_ylabel(measure)
    ax.grid(alpha=0.3, which="both")
    low, high = min(q for q, _ in usable.values()), max(q for q, _ in usable.values())
    pad = max(0.01, (high - low) * 0.15)
    ax.set_ylim(low - pad, high + pad)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path
