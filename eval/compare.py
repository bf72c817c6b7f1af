"""Comparing systems on the same queries: means, deltas, paired significance tests, win/tie/loss.

``compare(runs, qrels, measures, baseline=...)`` answers the question an IR experiment asks ("is B
better than A, and on which queries?") the way PyTerrier's ``Experiment`` does (Macdonald et al.,
CIKM 2021): per-query values from ir-measures (:mod:`rankwise.eval.metrics`), then for every system other
than the baseline and every measure

* the mean and its difference to the baseline's mean;
* a two-sided paired test over the queries: Student's paired t-test (``scipy.stats.ttest_rel``;
  the default, as Smucker, Allan and Carterette, CIKM 2007, found it agrees with the
  randomization test on IR data), or Fisher's randomization test (sign flips of the per-query
  differences, ``scipy.stats.permutation_test``, seeded; exact when 2^n is at most the number of
  resamples);
* the p-values corrected for multiple comparisons across the systems compared with the baseline,
  per measure (Holm's step-down method, Bonferroni, or none; ``statsmodels``' ``multipletests``);
* a marker, ``+`` for a significant gain and ``-`` for a significant loss (corrected p < alpha);
* win / tie / loss counts: queries where the system scores above / equal to / below the baseline.

The result is a pandas DataFrame, one row per system (the baseline first), with two-level columns
``(measure, stat)``; stats are ``mean``, ``delta``, ``p``, ``p_raw``, ``sig``, ``win``, ``tie``,
``loss``. :func:`render` writes it as a table, Markdown, LaTeX, CSV or JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rankwise.eval.choices import CORRECTIONS, FORMATS, TESTS
from rankwise.eval.metrics import DEFAULT_MEASURES, QrelsLike, RunLike, evaluate_per_query, parse_measures
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.json_output import dumps
from rankwise.retrieval.run import Run

# every table here is a DataFrame: importing this module is where a missing 'experiments' extra is named
pd = requires("pandas", "experiments", "Comparing systems")

STATS = ("mean", "delta", "p", "p_raw", "sig", "win", "tie", "loss")
_TIE = 1e-12  # per-query values closer than this count as a tie


def per_query_values(
    runs: Mapping[str, RunLike] | Sequence[Run],
    qrels: QrelsLike,
    measures: str | Iterable[Any] = DEFAULT_MEASURES,
    *,
    ignore_identical_ids: bool = True,
    strict: bool = True,
) -> pd.DataFrame:
    """Per-query values, long form: columns ``system, query_id, measure, value``.

    ``runs`` is ``{name: run}`` or a list of :class:`Run` (named by ``Run.name``). Every judged query
    of ``qrels`` gets a value for every system (0 where a run lacks it, see :mod:`rankwise.eval.metrics`).
    With ``strict``, a run naming a query that has no judgements is an :class:`InputError`: it
    usually means the run and the qrels are of different query sets.
    """
    named = _named_runs(runs)
    parsed = parse_measures(measures)
    judged = {str(q) for q, docs in qrels.items() if docs}
    rows: list[tuple[str, str, str, float]] = []
    for name, run in named.items():
        if strict:
            extra = sorted(str(q) for q in (run.keys() if isinstance(run, Mapping) else run) if str(q) not in judged)
            if extra:
                raise InputError(
                    f"run {name!r} has {len(extra)} quer{'y' if len(extra) == 1 else 'ies'} absent from the qrels "
                    f"(first: {extra[0]!r}); are the run and the qrels of the same query set?",
                    field="query_id",
                )
        values = evaluate_per_query(run, qrels, parsed, ignore_identical_ids=ignore_identical_ids)
        for measure, by_query in values.items():
            rows += [(name, qid, measure, value) for qid, value in by_query.items()]
    return pd.DataFrame(rows, columns=["system", "query_id", "measure", "value"])


def compare(
    runs: Mapping[str, RunLike] | Sequence[Run],
    qrels: QrelsLike,
    measures: str | Iterable[Any] = DEFAULT_MEASURES,
    *,
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
    ignore_identical_ids: bool = True,
) -> pd.DataFrame:
    """Compare ``runs`` on ``qrels``: one row per system, ``(measure, stat)`` columns (module docstring).

    ``baseline`` names the run the others are compared with (default: the first).
    """
    values = per_query_values(runs, qrels, measures, ignore_identical_ids=ignore_identical_ids)
    return compare_per_query(values, baseline=baseline, test=test, correction=correction, alpha=alpha,
                             resamples=resamples, seed=seed)


def check_comparison(test: str, correction: str, alpha: float) -> None:
    """Refuse an unknown test or correction, or a significance level outside (0, 1)."""
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}; choose from {', '.join(TESTS)}", field="test")
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}; choose from {', '.join(CORRECTIONS)}",
                         field="correction")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"the significance level must be in (0, 1), got {alpha}", field="significance")


def compare_per_query(
    values: pd.DataFrame,
    *,
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The comparison table of :func:`compare` from per-query values (as :func:`per_query_values` returns)."""
    check_comparison(test, correction, alpha)
    systems = list(dict.fromkeys(values["system"]))
    measures = list(dict.fromkeys(values["measure"]))
    if not systems:
        raise InputError("no runs to compare")
    baseline = systems[0] if baseline is None else baseline
    if baseline not in systems:
        raise InputError(f"the baseline {baseline!r} is not one of the runs ({', '.join(systems)})", field="baseline")
    systems = [baseline] + [s for s in systems if s != baseline]
    others = systems[1:]

    table = pd.DataFrame(index=pd.Index(systems, name="system"),
                         columns=pd.MultiIndex.from_product([measures, STATS], names=["measure", "stat"]),
                         dtype=object)
    for measure in measures:
        wide = values[values["measure"] == measure].pivot(index="query_id", columns="system", values="value")
        base = wide[baseline].to_numpy(dtype=float)
        raw: list[float] = []
        for system in systems:
            scores = wide[system].to_numpy(dtype=float)
            table.loc[system, (measure, "mean")] = float(scores.mean())
            table.loc[system, (measure, "delta")] = float(scores.mean() - base.mean())
            if system == baseline:
                continue
            diff = scores - base
            table.loc[system, (measure, "win")] = int((diff > _TIE).sum())
            table.loc[system, (measure, "tie")] = int((np.abs(diff) <= _TIE).sum())
            table.loc[system, (measure, "loss")] = int((diff < -_TIE).sum())
            raw.append(paired_test(scores, base, test=test, resamples=resamples, seed=seed))
        corrected = correct(raw, correction)
        for system, p_raw, p in zip(others, raw, corrected):
            delta = table.loc[system, (measure, "delta")]
            table.loc[system, (measure, "p_raw")] = p_raw
            table.loc[system, (measure, "p")] = p
            table.loc[system, (measure, "sig")] = ("+" if delta > 0 else "-") if p < alpha and delta != 0 else ""
        table.loc[baseline, (measure, "sig")] = ""
    for measure in measures:
        for stat in ("mean", "delta", "p", "p_raw"):
            table[(measure, stat)] = table[(measure, stat)].astype(float)
        for stat in ("win", "tie", "loss"):
            table[(measure, stat)] = table[(measure, stat)].astype("Int64")
    table.attrs.update(baseline=baseline, test=test, correction=correction, alpha=alpha,
                       queries=int(values["query_id"].nunique()))
    return table


def paired_test(scores: np.ndarray, base: np.ndarray, *, test: str = "t", resamples: int = 10_000,
                seed: int = 0) -> float:
    """Two-sided p-value of a paired test of ``scores`` against ``base`` (one value per query).

    ``t``: ``scipy.stats.ttest_rel``; ``randomization``: Fisher's randomization test, the per-query
    differences' signs flipped at random (``scipy.stats.permutation_test`` with ``samples``
    permutations, ``resamples`` of them from ``seed``). Identical scores give p = 1.
    """
    stats = requires("scipy.stats", "experiments", "Comparing systems")

    scores, base = np.asarray(scores, dtype=float), np.asarray(base, dtype=float)
    diff = scores - base
    if len(diff) < 2 or np.all(np.abs(diff) <= _TIE):
        return 1.0
    if test == "t":
        p = float(stats.ttest_rel(scores, base).pvalue)
        return 0.0 if math.isnan(p) else p  # NaN only when every difference is the same non-zero value
    if test == "randomization":
        result = stats.permutation_test(
            (scores, base), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
            vectorized=True, n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
        return float(min(1.0, result.pvalue))
    raise InputError(f"unknown test {test!r}; choose from {', '.join(TESTS)}", field="test")


def correct(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """p-values corrected for multiple comparisons (statsmodels' ``multipletests``); ``none`` keeps them."""
    if method not in CORRECTIONS:
        raise InputError(f"unknown correction {method!r}; choose from {', '.join(CORRECTIONS)}", field="correction")
    if method == "none" or not pvalues:
        return [float(p) for p in pvalues]
    requires("statsmodels", "experiments", "Comparing systems")
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), method=method)[1]]


def _named_runs(runs: Mapping[str, RunLike] | Sequence[Run]) -> dict[str, RunLike]:
    if isinstance(runs, Mapping):
        named = {str(k): v for k, v in runs.items()}
    else:
        named = {}
        for run in runs:
            name = getattr(run, "name", None)
            if not name:
                raise InputError("a run without a name: pass {name: run}")
            if name in named:
                raise InputError(f"two runs are named {name!r}: give each run its own name", field="run")
            named[name] = run
    if not named:
        raise InputError("no runs to compare")
    return named


# --------------------------------------------------------------------------------------------
# Rendering.


def flat_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per system, keys ``system``, ``<measure>``, ``<measure> delta``, ``<measure> p``... (JSON-ready)."""
    rows = []
    for system, row in table.iterrows():
        out: dict[str, Any] = {"system": system}
        for (measure, stat), value in row.items():
            key = measure if stat == "mean" else f"{measure} {stat}"
            out[key] = None if value is pd.NA or (isinstance(value, float) and math.isnan(value)) else (
                int(value) if stat in ("win", "tie", "loss") else value)
        rows.append(out)
    return rows


def _cells(table: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text cells: per measure the mean (with a marker) and "delta (p)"; then the
    win/tie/loss counts of the first measure (every measure's are in the CSV and JSON forms)."""
    marks = {"+": r"$^{\blacktriangle}$", "-": r"$^{\blacktriangledown}$"} if latex else {"+": " ▲", "-": " ▼"}
    delta = r"$\Delta$" if latex else "Δ"
    measures = list(dict.fromkeys(table.columns.get_level_values(0)))
    header = ["system"]
    for m in measures:
        header += [m, f"{delta} (p)"]
    header.append(f"W/T/L {measures[0]}")
    body = []
    baseline = table.attrs.get("baseline")
    for system, row in table.iterrows():
        cells = [str(system) + (" (baseline)" if system == baseline else "")]
        for m in measures:
            cells.append(f"{row[(m, 'mean')]:.4f}{marks.get(row[(m, 'sig')] or '', '')}")
            if system == baseline:
                cells.append("")
                continue
            p = row[(m, "p")]
            cells.append(f"{row[(m, 'delta')]:+.4f} ({'<0.001' if p < 0.001 else f'{p:.3f}'})")
        first = measures[0]
        cells.append("" if system == baseline else f"{row[(first, 'win')]}/{row[(first, 'tie')]}/{row[(first, 'loss')]}")
        body.append(cells)
    if latex:
        escape = lambda c: c if "$" in c else c.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace(
            "&", r"\&").replace("%", r"\%").replace("#", r"\#").replace("<", "$<$")
        body = [[escape(c) for c in cells] for cells in body]
        header = [escape(h) for h in header]
    return header, body


def caption(table: pd.DataFrame) -> str:
    """One line saying what the markers and p-values mean."""
    a = table.attrs
    test = "paired t-test" if a.get("test") == "t" else "Fisher's randomization test"
    corr = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}[a.get("correction", "none")]
    return (f"{a.get('queries', '?')} queries; p: two-sided {test} against {a.get('baseline')}, {corr} per measure; "
            f"▲/▼ significant gain/loss at alpha={a.get('alpha', 0.05):g}; W/T/L: queries won/tied/lost")


def render(table: pd.DataFrame, fmt: str = "table", *, title: str | None = None) -> Any:
    """``table`` as a rich ``Table`` (``table``) or a string (``markdown``, ``latex``, ``csv``, ``json``)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}", field="format")
    if fmt == "json":
        return dumps({"baseline": table.attrs.get("baseline"), "test": table.attrs.get("test"),
                      "correction": table.attrs.get("correction"), "alpha": table.attrs.get("alpha"),
                      "queries": table.attrs.get("queries"), "systems": flat_rows(table)})
    if fmt == "csv":
        return pd.DataFrame(flat_rows(table)).to_csv(index=False, lineterminator="\n")
    header, body = _cells(table, latex=fmt == "latex")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n\n" + caption(table) + "\n"
    if fmt == "latex":
        lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(cells) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    rich_table = Table(title=title, caption=caption(table), caption_justify="left")
    for i, name in enumerate(header):
        rich_table.add_column(name, justify="left" if i == 0 else "right")
    for cells in body:
        rich_table.add_row(*cells)
    return rich_table
