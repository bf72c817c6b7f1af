"""Comparing systems: the paired tests, corrections, win/tie/loss, renderers, plots and the commands."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rankwise.eval.compare import compare, compare_per_query, correct, paired_test, per_query_values, render
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run
from tests._helpers import run_cli

N = 20


def _qrels(n: int = N) -> dict[str, dict[str, int]]:
    return {f"q{i:02d}": {"r": 1, "x": 0} for i in range(n)}


def _run(improved: set[int] = frozenset(), hurt: set[int] = frozenset(), n: int = N) -> dict[str, dict[str, float]]:
    """Baseline: the relevant document second (RR 1/2); improved: first (RR 1); hurt: third (RR 1/3)."""
    run = {}
    for i in range(n):
        if i in improved:
            run[f"q{i:02d}"] = {"r": 3.0, "x": 2.0, "y": 1.0}
        elif i in hurt:
            run[f"q{i:02d}"] = {"x": 3.0, "y": 2.0, "r": 1.0}
        else:
            run[f"q{i:02d}"] = {"x": 3.0, "r": 2.0, "y": 1.0}
    return run


def _as_run(run: dict[str, dict[str, float]], name: str) -> Run:
    return Run({q: list(docs.items()) for q, docs in run.items()}, name=name)


def _random_runs(seed: int = 0, n: int = 40) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 3)) for j in range(8)} for i in range(n)}
    runs = {name: {q: {f"d{j}": float(rng.random()) for j in range(8)} for q in qrels} for name in ("a", "b", "c")}
    return runs, qrels


def test_t_test_p_values_equal_scipy_ttest_rel_on_the_per_query_values():
    runs, qrels = _random_runs()
    table = compare(runs, qrels, ["nDCG@10", "AP@100"], baseline="a", correction="none")
    values = per_query_values(runs, qrels, ["nDCG@10", "AP@100"])
    for measure in ("nDCG@10", "AP@100"):
        wide = values[values.measure == measure].pivot(index="query_id", columns="system", values="value")
        for system in ("b", "c"):
            expected = stats.ttest_rel(wide[system], wide["a"]).pvalue
            assert abs(table.loc[system, (measure, "p")] - expected) <= 1e-12
            # and by the textbook formula: t = mean(d) / (sd(d) / sqrt(n)), two-sided
            d = (wide[system] - wide["a"]).to_numpy()
            t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
            assert table.loc[system, (measure, "p")] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), abs=1e-12)
            assert table.loc[system, (measure, "mean")] == pytest.approx(wide[system].mean(), abs=1e-15)


def test_planted_difference_gives_the_delta_the_counts_and_corrections_only_raise_p_values():
    qrels = _qrels()
    runs = {"base": _run(), "seven": _run(improved=set(range(7))), "mixed": _run(improved={0, 1, 2, 3}, hurt={10, 11, 12})}
    tables = {c: compare(runs, qrels, ["RR@10", "nDCG@10"], baseline="base", correction=c)
              for c in ("none", "holm", "bonferroni")}
    holm = tables["holm"]
    assert list(holm.index) == ["base", "seven", "mixed"]
    assert holm.loc["seven", ("RR@10", "delta")] == pytest.approx(7 * 0.5 / N, abs=1e-12)
    assert holm.loc["mixed", ("RR@10", "delta")] == pytest.approx((4 * 0.5 - 3 * (0.5 - 1 / 3)) / N, abs=1e-12)
    assert holm.loc["base", ("RR@10", "mean")] == pytest.approx(0.5)
    for measure in ("RR@10", "nDCG@10"):
        assert [holm.loc["seven", (measure, s)] for s in ("win", "tie", "loss")] == [7, 13, 0]
        assert [holm.loc["mixed", (measure, s)] for s in ("win", "tie", "loss")] == [4, 13, 3]
        raw = [tables["none"].loc[s, (measure, "p")] for s in ("seven", "mixed")]
        for system, p_raw in zip(("seven", "mixed"), raw):
            assert tables["none"].loc[system, (measure, "p_raw")] == p_raw
            assert holm.loc[system, (measure, "p_raw")] == p_raw
            assert holm.loc[system, (measure, "p")] >= p_raw
            assert tables["bonferroni"].loc[system, (measure, "p")] >= holm.loc[system, (measure, "p")]
            assert tables["bonferroni"].loc[system, (measure, "p")] == pytest.approx(min(1.0, 2 * p_raw))
        # Holm: the smallest p times 2, the next times 1, kept monotone
        assert holm.loc["seven", (measure, "p")] == pytest.approx(min(1.0, 2 * min(raw)))
        assert holm.loc["seven", (measure, "sig")] == "+"
        assert holm.loc["mixed", (measure, "sig")] == ""
    assert pd.isna(holm.loc["base", ("RR@10", "p")]) and pd.isna(holm.loc["base", ("RR@10", "win")])


def test_correction_never_lowers_a_p_value():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = list(rng.random(rng.integers(1, 8)) ** 3)
        for method in ("holm", "bonferroni"):
            assert all(c >= r - 1e-15 for c, r in zip(correct(p, method), p))
        assert correct(p, "none") == p


def test_randomization_test_is_exact_on_few_queries_and_seeded():
    base = np.array([0.5] * 6)
    scores = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    # 2^6 sign patterns <= resamples: exact; |mean| >= observed only when the 3 differences share a sign
    assert paired_test(scores, base, test="randomization") == pytest.approx(0.25, abs=1e-12)
    runs, qrels = _random_runs(seed=1)
    one = compare(runs, qrels, ["nDCG@10"], test="randomization", seed=7)
    two = compare(runs, qrels, ["nDCG@10"], test="randomization", seed=7)
    t = compare(runs, qrels, ["nDCG@10"], test="t")
    pd.testing.assert_frame_equal(one, two)
    for system in ("b", "c"):
        assert one.loc[system, ("nDCG@10", "p_raw")] == pytest.approx(t.loc[system, ("nDCG@10", "p_raw")], abs=0.06)
    assert paired_test(base, base, test="randomization") == 1.0 and paired_test(base, base) == 1.0


def test_bad_inputs_are_input_errors():
    qrels = _qrels()
    with pytest.raises(InputError, match="absent from the qrels"):
        compare({"a": _run(), "b": {**_run(), "unjudged": {"r": 1.0}}}, qrels, ["RR@10"])
    with pytest.raises(InputError, match="two runs are named 'same'"):
        compare([_as_run(_run(), "same"), _as_run(_run(), "same")], qrels, ["RR@10"])
    with pytest.raises(InputError, match="unknown or malformed measure"):
        compare({"a": _run(), "b": _run()}, qrels, ["nDCG@ten"])
    with pytest.raises(InputError, match="baseline 'zzz'"):
        compare({"a": _run(), "b": _run()}, qrels, ["RR@10"], baseline="zzz")
    with pytest.raises(InputError, match="unknown test"):
        compare({"a": _run(), "b": _run()}, qrels, ["RR@10"], test="wilcoxon")


def test_every_format_renders_the_same_numbers():
    runs = {"base": _run(), "seven": _run(improved=set(range(7)))}
    table = compare(runs, _qrels(), ["RR@10"], baseline="base")
    back = pd.read_csv(io.StringIO(render(table, "csv")))
    assert list(back["system"]) == ["base", "seven"] and back.loc[1, "RR@10 win"] == 7
    assert back.loc[1, "RR@10"] == pytest.approx(table.loc["seven", ("RR@10", "mean")])
    doc = json.loads(render(table, "json"))
    assert doc["baseline"] == "base" and doc["systems"][1]["RR@10 p"] == pytest.approx(table.loc["seven", ("RR@10", "p")])
    markdown = render(table, "markdown")
    assert "| seven | 0.6750 ▲ | +0.1750 (" in markdown and "7/13/0" in markdown
    latex = render(table, "latex")
    assert r"\begin{tabular}" in latex and r"0.6750$^{\blacktriangle}$" in latex


def test_plots_are_png_files(tmp_path):
    from rankwise.eval import plots

    runs = {"base": _run(), "seven": _run(improved=set(range(7))), "mixed": _run(improved={1}, hurt={2})}
    values = per_query_values(runs, _qrels(), ["RR@10"])
    delta = plots.per_query_delta(values, tmp_path / "d.png", baseline="base")
    cost = plots.quality_cost({"base": (0.5, 300.0), "seven": (0.675, 20.0)}, tmp_path / "c.png", measure="RR@10")
    for path in (delta, cost):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(InputError):
        plots.per_query_delta(values, tmp_path / "x.png", baseline="nope")


def test_compare_from_per_query_values_needs_a_known_baseline():
    values = pd.DataFrame([("a", "q", "RR@10", 1.0)], columns=["system", "query_id", "measure", "value"])
    assert compare_per_query(values).attrs["baseline"] == "a"


# ---------------------------------------------------------------------------------------------
# The commands.


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:"), err
    return lines[0]


def _write_qrels(path, qrels) -> None:
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))


def test_compare_command_prints_the_table_and_writes_per_query_values_and_a_plot(tmp_path, capsys):
    _write_qrels(tmp_path / "qrels.txt", _qrels())
    _as_run(_run(), "base").write(tmp_path / "base.trec")
    _as_run(_run(improved=set(range(7))), "x").write(tmp_path / "better.trec")
    code, out, err = run_cli(capsys, "compare", tmp_path / "base.trec", tmp_path / "better.trec", "--qrels",
                               tmp_path / "qrels.txt", "--measures", "RR@10,nDCG@10", "--format", "markdown",
                               "--per-query", tmp_path / "pq.csv", "--plot", tmp_path / "plots")
    assert code == 0, err
    assert "| better | 0.6750 ▲ | +0.1750 (" in out and "7/13/0" in out
    per_query = pd.read_csv(tmp_path / "pq.csv", dtype={"query_id": str})
    assert len(per_query) == 2 * 2 * N and set(per_query.system) == {"base", "better"}
    assert (tmp_path / "plots" / "per-query-delta.png").is_file()


def test_compare_command_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    _write_qrels(tmp_path / "qrels.txt", _qrels())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _as_run(_run(), "r").write(tmp_path / "a" / "run.trec")
    _as_run(_run(), "r").write(tmp_path / "b" / "run.trec")
    _as_run({**_run(), "q99": {"r": 1.0}}, "r").write(tmp_path / "extra.trec")
    qrels = ["--qrels", tmp_path / "qrels.txt"]
    cases = [
        ([tmp_path / "a" / "run.trec", tmp_path / "b" / "run.trec", *qrels], "two runs are named 'run'"),
        ([tmp_path / "a" / "run.trec", tmp_path / "extra.trec", *qrels], "absent from the qrels (first: 'q99')"),
        ([tmp_path / "a" / "run.trec", tmp_path / "extra.trec", *qrels, "--measures", "nDCG@x"], "unknown or malformed measure"),
        ([tmp_path / "a" / "run.trec", *qrels, "--test", "sign"], "option '--test': 'sign' is not one of 't', 'randomization'"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "compare", *args)
        assert code == 2 and message in _one_error(err)


def test_beir_systems_numbers_equal_the_single_system_runs(synthetic_beir, tiny_encoder, tiny_cross_encoder,
                                                           tmp_path, capsys, monkeypatch):
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.eval.systems import single_system

    ce = f"cross-encoder:{tiny_cross_encoder}"
    systems = f"bm25,dense,hybrid,bm25>>{ce},batch_size=8"
    monkeypatch.setattr("sys.argv", ["rankwise", "beir", str(synthetic_beir), "--systems", systems])
    code, out, err = run_cli(capsys, "beir", synthetic_beir, "--systems", systems, "--encoder", tiny_encoder,
                               "--baseline", "bm25", "--plot", tmp_path / "plots", "--out", tmp_path / "out",
                               "--format", "json", "--depth", "20")
    assert code == 0, err
    table = json.loads(out)
    assert table["baseline"] == "bm25" and table["correction"] == "holm"
    rows = {row["system"]: row for row in table["systems"]}
    assert list(rows) == ["bm25", "dense", "hybrid", f"bm25>>{ce},batch_size=8"]
    for png in ("per-query-delta.png", "quality-cost.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    record = document["provenance"]
    assert record["rankwise"] and record["packages"]["scipy"] == "1.17.1" and "ir-measures" in record["packages"]
    assert record["command"].startswith("rankwise beir ") and "--systems" in record["command"]
    assert document["schema"] == "rankwise.results" and document["version"] == 2
    [entry] = document["experiments"]
    assert entry["dataset"] == "synthetic" and entry["baseline"] == "bm25"
    assert [row["system"] for row in entry["comparison"]] == list(rows)
    assert len(entry["systems"]["dense"]["models"]["encoder"]) == 64
    assert len(entry["systems"][f"bm25>>{ce},batch_size=8"]["models"]["reranker"]) == 64
    # BM25 searched once for bm25 and bm25>>cross-encoder: the same recorded timing
    reranked = entry["systems"][f"bm25>>{ce},batch_size=8"]
    assert reranked["timings"]["bm25_search_s"] == entry["systems"]["bm25"]["timings"]["bm25_search_s"]
    assert reranked["reused"] == ["bm25"] and entry["systems"]["bm25"]["reused"] == []

    dataset = resolve_dataset(str(synthetic_beir), download=False, progress=False)
    singles = {
        "bm25": single_system("bm25"),
        "dense": single_system("dense", model=str(tiny_encoder)),
        "hybrid": single_system("hybrid", model=str(tiny_encoder)),
        f"bm25>>{ce},batch_size=8": single_system("bm25", f"{ce},batch_size=8", depth=20),
    }
    for name, pipeline in singles.items():
        single = Experiment([pipeline], dataset, progress=False).run().systems[pipeline.name]
        for measure, value in single.metrics.items():
            assert rows[name][measure] == pytest.approx(value, abs=5e-7), (name, measure)  # --format json: 6 digits
            assert entry["systems"][name]["metrics"][measure] == value
    # the delta is computed from the unrounded scores and then printed to 6 digits (one rounding, not three)
    exact = entry["systems"]["dense"]["metrics"]["nDCG@10"] - entry["systems"]["bm25"]["metrics"]["nDCG@10"]
    assert rows["dense"]["nDCG@10 delta"] == pytest.approx(exact, abs=5e-7)


def test_beir_systems_bad_specs_fail_before_any_work(synthetic_beir, capsys):
    for systems, message in (("bm25,bm25", "given twice"), ("bm25,splade", "must start with one of"),
                             ("bm25>>", "names no reranker"), ("bm25,dense", "baseline 'hybrid'")):
        code, _, err = run_cli(capsys, "beir", synthetic_beir, "--systems", systems, "--baseline",
                                 "hybrid" if "baseline" in message else "bm25")
        assert code == 2 and message in _one_error(err)


def test_system_specs_keep_reranker_options_together():
    from rankwise.eval.systems import parse_systems

    assert parse_systems("bm25, dense,bm25>>cross-encoder:./m,batch_size=8,max_length=64,hybrid") == [
        "bm25", "dense", "bm25>>cross-encoder:./m,batch_size=8,max_length=64", "hybrid"]


@pytest.mark.integration
def test_scifact_subset_bm25_dense_hybrid_compared_with_corrected_p_values(tmp_path, tiny_encoder, capsys):
    """Real SciFact text: 40 test queries over their relevant documents plus the first 1,000 others."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.eval.systems import single_system
    from rankwise.retrieval.formats import read_qrels, read_queries
    from tests.conftest import require_shared, write_beir

    root = require_shared("scifact")
    qrels = dict(list(read_qrels(root / "qrels" / "test.tsv").items())[:40])
    queries = read_queries(root / "queries.jsonl")
    wanted = {d for docs in qrels.values() for d in docs}
    docs = []
    with open(root / "corpus.jsonl", encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            doc = json.loads(line)
            if number < 1000 or doc["_id"] in wanted:
                docs.append(doc)
    folder = write_beir(tmp_path / "scifact-subset", docs, [{"_id": q, "text": queries[q]} for q in qrels],
                        [(q, d, g) for q, ds in qrels.items() for d, g in ds.items()])
    code, out, err = run_cli(capsys, "beir", folder, "--systems", "bm25,dense,hybrid", "--encoder", tiny_encoder,
                               "--baseline", "bm25", "--plot", tmp_path / "out", "--format", "json")
    assert code == 0, err
    rows = {row["system"]: row for row in json.loads(out)["systems"]}
    assert all(rows[s]["nDCG@10 p"] >= rows[s]["nDCG@10 p_raw"] for s in ("dense", "hybrid"))
    assert rows["bm25"]["nDCG@10"] > 0.5  # BM25 on SciFact: about 0.68 on the full collection
    for png in ("per-query-delta.png", "quality-cost.png"):
        assert (tmp_path / "out" / png).is_file()
    dataset = resolve_dataset(str(folder), download=False, progress=False)
    for name in ("bm25", "hybrid"):
        pipeline = single_system(name, model=str(tiny_encoder))
        single = Experiment([pipeline], dataset, progress=False).run().systems[pipeline.name]
        assert all(rows[name][m] == pytest.approx(v, abs=5e-7) for m, v in single.metrics.items())  # --json: 6 digits


def test_run_files_compare_in_an_experiment_from_python(tmp_path):
    """``rankwise compare`` is an Experiment of precomputed runs: the same from Python, on a qrels file."""
    from rankwise.eval.experiment import Experiment
    from rankwise.retrieval.errors import InputError
    from rankwise.retrieval.run import Run

    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n")
    a = Run({"q1": [("d1", 3), ("d2", 2)], "q2": [("d3", 1)]}, name="a")
    b = Run({"q1": [("d2", 3), ("d1", 2)], "q2": [("d4", 1)]}, name="b")
    result = Experiment([a, b], str(qrels), ["nDCG@10", "AP"], progress=False).run()
    assert result.baseline == "a" and not result.drop_self_hits
    assert result.table.loc["a"].to_dict() == {"nDCG@10": 1.0, "AP": 1.0}
    assert result.table.loc["b", "AP"] == pytest.approx(0.25)  # q1: 1/2, q2: 0
    assert result.runs["a"].as_dict() == a.as_dict()  # evaluated as given
    stray = Run({"q9": [("d1", 1.0)]}, name="stray")
    with pytest.raises(InputError, match="run 'stray' has 1 query absent from the qrels"):
        Experiment([a, stray], str(qrels), progress=False).run()
