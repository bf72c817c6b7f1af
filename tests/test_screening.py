"""Screening measures (Recall@K%, WSS@R, LastRel) against hand values, and the CLEF TAR reader."""

from __future__ import annotations

import pytest

from rankwise.eval.metrics import evaluate, evaluate_per_query, parse_measures
from rankwise.eval.screening import parse_screening, read_tar, screening_value
from rankwise.retrieval.errors import InputError

RANKING = list("abcdefghij")  # N = 10
RELEVANT = {"b", "e", "f"}  # positions 2, 5, 6


def value(name: str, ranking=RANKING, relevant=RELEVANT) -> float:
    return screening_value(parse_screening(name), ranking, relevant, "t1")


def test_hand_values():
    assert value("LastRel") == 6
    assert value("Recall@10%") == 0.0  # top ceil(1) = 1 document
    assert value("Recall@50%") == pytest.approx(2 / 3)  # top 5: b, e
    assert value("Recall@60%") == pytest.approx(1.0)
    # WSS@95: ceil(0.95 x 3) = 3 relevant needed, reached at n = 6: (10 - 6) / 10 - 0.05
    assert value("WSS@95") == pytest.approx(0.35)
    # WSS@50: 2 needed, reached at n = 5: 0.5 - 0.5
    assert value("WSS@50") == pytest.approx(0.0)
    # perfect ranking of 1 relevant in 100: (100 - 1) / 100 - 0.05
    assert value("WSS@95", [f"d{i}" for i in range(100)], {"d0"}) == pytest.approx(0.94)


def test_missing_relevant_counts_last():
    # z is not ranked: it comes after c, so N = 4 and the last relevant is at 4
    assert value("LastRel", list("abc"), {"b", "z"}) == 4
    assert value("WSS@95", list("abc"), {"b", "z"}) == pytest.approx(-0.05)
    assert value("Recall@50%", list("abc"), {"b", "z"}) == pytest.approx(0.5)


def test_through_evaluate_with_ir_measures():
    run = {"t1": {d: 10.0 - i for i, d in enumerate(RANKING)},
           "t2": {"x": 3.0, "y": 2.0, "w": 1.0}}
    qrels = {"t1": {d: (1 if d in RELEVANT else 0) for d in RANKING}, "t2": {"w": 1, "x": 0}}
    per_query = evaluate_per_query(run, qrels, ["WSS@95", "LastRel", "Recall@10%", "nDCG@10"])
    assert per_query["WSS@95"] == {"t1": pytest.approx(0.35), "t2": pytest.approx(-0.05)}
    assert per_query["LastRel"] == {"t1": 6.0, "t2": 3.0}
    assert per_query["Recall@10%"] == {"t1": 0.0, "t2": 0.0}
    assert 0 < per_query["nDCG@10"]["t1"] < 1
    means = evaluate(run, qrels, ["LastRel", "WSS@95"])
    assert means == {"LastRel": pytest.approx(4.5), "WSS@95": pytest.approx(0.15)}


def test_names_parse():
    assert [str(m) for m in parse_measures(["recall@10%", "wss@95", "lastrel", "nDCG@5"])] == [
        "Recall@10%", "WSS@95", "LastRel", "nDCG@5"]
    with pytest.raises(InputError, match="percentage"):
        parse_measures(["WSS@0"])


def test_wss_without_relevant_is_an_error():
    with pytest.raises(InputError, match="'t1' has no relevant document"):
        evaluate({"t1": {"a": 1.0}}, {"t1": {"a": 0}}, ["WSS@95"])


def write_tar(root, topics, qrels_lines, docs):
    import json

    (root / "topics").mkdir(parents=True)
    for tid, title, pids in topics:
        (root / "topics" / tid).write_text(
            f"Topic: {tid}\n\nTitle: {title}\n\nQuery:\nfoo AND bar\n\nPids:\n" + "".join(f"    {p}\n" for p in pids))
    (root / "qrels.txt").write_text("".join(line + "\n" for line in qrels_lines))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in docs.items()))
    return root


def test_read_tar(tmp_path):
    root = write_tar(tmp_path / "tar", [("CD1", "statins and stroke", ["1", "2", "3"])],
                     ["CD1 0 1 0", "CD1 0 2 1", "CD1 0 9 1"], {"1": "a", "2": "b", "3": "c"})
    tar = read_tar(root)
    topic = tar.topics["CD1"]
    assert topic.title == "statins and stroke" and topic.query == "foo AND bar" and topic.pids == ["1", "2", "3"]
    assert tar.qrels == {"CD1": {"1": 0, "2": 1}}  # judgements outside the candidates dropped


def test_read_tar_topic_without_relevant(tmp_path):
    root = write_tar(tmp_path / "tar", [("CD1", "t", ["1", "2"])], ["CD1 0 1 0", "CD1 0 2 0"], {"1": "a", "2": "b"})
    with pytest.raises(InputError) as err:
        read_tar(root)
    assert str(err.value) == (f"{root / 'qrels.txt'}:1: field 'qrels': topic 'CD1' has no relevant candidate: "
                              "WSS is undefined")


def test_read_tar_bad_topic_file(tmp_path):
    root = write_tar(tmp_path / "tar", [("CD1", "t", ["1"])], ["CD1 0 1 1"], {"1": "a"})
    (root / "topics" / "CD2").write_text("Title: no topic line first\n")
    with pytest.raises(InputError, match=r"CD2:1: field 'topic': text before|CD2: field 'topic': missing"):
        read_tar(root)


# --------------------------------------------------------------------------------------------
# The command line.

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.conftest import require_shared  # noqa: E402
from tests._helpers import error_line, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_cli_topic_without_relevant_exits_2(tmp_path, capsys):
    root = write_tar(tmp_path / "tar", [("CD1", "t", ["1", "2"])], ["CD1 0 1 0", "CD1 0 2 0"], {"1": "a", "2": "b"})
    code, _, err = run_cli(capsys, "screening", root)
    assert code == 2
    assert error_line(err) == (f"rankwise: error: {root / 'qrels.txt'}:1: field 'qrels': topic 'CD1' has no "
                                "relevant candidate: WSS is undefined")


def test_compare_reports_screening_measures(tmp_path, capsys):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("t1 0 a 0\nt1 0 b 1\nt1 0 c 0\nt1 0 d 1\nt2 0 a 1\nt2 0 b 0\n")
    for name, order in (("good", {"t1": "bdac", "t2": "ab"}), ("bad", {"t1": "acbd", "t2": "ba"})):
        (tmp_path / f"{name}.trec").write_text("".join(
            f"{q} Q0 {d} {i + 1} {10 - i} {name}\n" for q, docs in order.items() for i, d in enumerate(docs)))
    code, out, err = run_cli(capsys, "compare", tmp_path / "good.trec", tmp_path / "bad.trec", "--qrels", qrels,
                               "--measures", "WSS@95,LastRel,Recall@50%", "--format", "json",
                               "--per-query", tmp_path / "pq.csv")
    assert code == 0, err
    rows = {r["system"]: r for r in json.loads(out)["systems"]}
    # good: t1 (4-2)/4 - .05 = .45, t2 (2-1)/2 - .05 = .45; bad: t1 0 - .05, t2 0 - .05
    assert rows["good"]["WSS@95"] == pytest.approx(0.45) and rows["bad"]["WSS@95"] == pytest.approx(-0.05)
    assert rows["good"]["LastRel"] == pytest.approx(1.5) and rows["bad"]["LastRel"] == pytest.approx(3.0)
    # Recall@50%: t1 cut-off 2 (good: b d -> 2/2, bad: a c -> 0/2); t2 cut-off 1 (good: a -> 1, bad: b -> 0)
    assert rows["good"]["Recall@50%"] == pytest.approx(1.0) and rows["bad"]["Recall@50%"] == pytest.approx(0.0)
    assert "WSS@95" in (tmp_path / "pq.csv").read_text()


@pytest.mark.slow
def test_scifact_stand_in_end_to_end(tmp_path, tiny_encoder, capsys):
    source = require_shared("scifact")
    folder = tmp_path / "tar"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_screening_scifact.py"), "--source", str(source),
                    "--out", str(folder), "--topics", "6", "--candidates", "40", "--seed", "1"],
                   check=True, capture_output=True, cwd=ROOT)
    tar = read_tar(folder)
    assert len(tar.topics) == 6 and all(len(t.pids) == 40 for t in tar.topics.values())
    code, out, err = run_cli(capsys, "screening", folder, "--systems", "bm25,dense", "--encoder", tiny_encoder,
                               "--json", "--per-query", tmp_path / "pq.csv", "--out", tmp_path / "out")
    assert code == 0, err
    rows = json.loads(out)
    assert list(rows) == ["bm25", "dense"]
    for row in rows.values():
        assert set(row) == {"Recall@10%", "WSS@95", "LastRel"}
        assert -0.05 <= row["WSS@95"] <= 0.95 and 1 <= row["LastRel"] <= 40
    assert rows["bm25"]["WSS@95"] > 0.5  # the claim's own evidence among random abstracts: BM25 finds it early
    lines = (tmp_path / "pq.csv").read_text().splitlines()
    assert lines[0] == "system,query_id,measure,value" and len(lines) == 1 + 2 * 3 * 6
    run = (tmp_path / "out" / "bm25.trec").read_text().splitlines()
    assert len(run) == 6 * 40  # every candidate ranked, nothing else


def test_beir_accepts_screening_measures(synthetic_beir, capsys, tmp_path):
    from rankwise.eval.metrics import evaluate
    from rankwise.retrieval.formats import read_qrels
    from rankwise.retrieval.run import Run

    code, out, err = run_cli(capsys, "beir", synthetic_beir, "--measures", "nDCG@10,WSS@95,LastRel,Recall@10%",
                               "-k", "400", "--json", "--out", tmp_path / "out")
    assert code == 0, err
    metrics = json.loads(out)["synthetic"]
    assert set(metrics) == {"nDCG@10", "WSS@95", "LastRel", "Recall@10%"}
    run = Run.read(tmp_path / "out" / "synthetic" / "bm25.trec")
    qrels = read_qrels(synthetic_beir / "qrels" / "test.tsv")
    assert metrics == pytest.approx(evaluate(run, qrels, ["nDCG@10", "WSS@95", "LastRel", "Recall@10%"]))
    # one relevant document per query, every document ranked: LastRel is its mean 1-based position
    positions = [[d for d, _ in sorted(run[q], key=lambda x: -x[1])].index(next(iter(qrels[q]))) + 1 for q in qrels]
    assert metrics["LastRel"] == pytest.approx(sum(positions) / len(positions))
    sizes = [len(run[q]) for q in qrels]  # N: the documents BM25 ranked for the query
    assert metrics["WSS@95"] == pytest.approx(sum((n - p) / n - 0.05 for n, p in zip(sizes, positions)) / len(sizes))
