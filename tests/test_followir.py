"""FollowIR: p-MRR against hand-computed values, the folder reader, and SciFact end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.eval.followir import FollowIRDataset, changed_documents, p_mrr, p_mrr_per_query, pair_score
from rankwise.retrieval.errors import InputError
from tests.conftest import require_shared
from tests._helpers import error_line, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_pair_score_hand_values():
    # moved down (followed the instruction): 1 - R_og / R_new
    assert pair_score(1, 2) == pytest.approx(0.5)
    assert pair_score(5, 20) == pytest.approx(0.75)
    # moved up (did the opposite): R_new / R_og - 1
    assert pair_score(4, 2) == pytest.approx(-0.5)
    assert pair_score(10, 1) == pytest.approx(-0.9)
    assert pair_score(3, 3) == 0.0


def ranked(*docs: str) -> dict[str, float]:
    return {d: float(len(docs) - i) for i, d in enumerate(docs)}


def test_p_mrr_hand_computed():
    qrels_og = {"A": {"d1": 1, "d2": 1, "d9": 0}, "B": {"d3": 1, "d4": 1}, "C": {"d5": 1}}
    qrels_changed = {"A": {"d1": 0, "d2": 0, "d9": 0}, "B": {"d4": 1}, "C": {"d5": 1}}
    assert changed_documents(qrels_og, qrels_changed) == {"A": ["d1", "d2"], "B": ["d3"]}
    run_og = {"A": ranked("d1", "x", "d2"), "B": ranked("x", "d3", "d4"), "C": ranked("d5")}
    run_new = {"A": ranked("d2", "d1", "x"), "B": ranked("x", "d4", "y"), "C": ranked("d5")}
    # A: d1 1 -> 2: 1 - 1/2 = 0.5; d2 3 -> 1: 1/3 - 1 = -2/3; mean -1/12
    # B: d3 2 -> not retrieved (rank len + 1 = 4): 1 - 2/4 = 0.5; C has no changed document
    per_query = p_mrr_per_query(run_og, run_new, qrels_og, qrels_changed)
    assert per_query == {"A": pytest.approx(-1 / 12), "B": pytest.approx(0.5)}
    assert p_mrr(run_og, run_new, qrels_og, qrels_changed) == pytest.approx((-1 / 12 + 0.5) / 2)
    # the same rankings under both instructions: 0; a perfect follower that drops them to the bottom: near 1
    assert p_mrr(run_og, run_og, qrels_og, qrels_changed) == 0.0
    far = {"A": {**{f"z{i}": 100.0 - i for i in range(98)}, "d1": 1.0, "d2": 0.5}}
    assert p_mrr({"A": ranked("d1", "d2")}, far, {"A": qrels_og["A"]}, {"A": qrels_changed["A"]}) == pytest.approx(
        ((1 - 1 / 99) + (1 - 2 / 100)) / 2)


def test_p_mrr_needs_a_changed_document():
    with pytest.raises(InputError, match="p-MRR is undefined"):
        p_mrr({"A": ranked("d1")}, {"A": ranked("d1")}, {"A": {"d1": 1}}, {"A": {"d1": 1}})


def write_followir(root: Path, queries_text: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i} apples"}) + "\n" for i in range(5)))
    (root / "queries.jsonl").write_text(queries_text)
    (root / "qrels" / "og.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (root / "qrels" / "changed.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    return root


def test_reader_joins_query_and_instruction(tmp_path):
    line = {"query-id": "q1", "query": "apples", "instruction_og": "about fruit.", "instruction_changed": "no pears."}
    dataset = FollowIRDataset("x", write_followir(tmp_path / "f", json.dumps(line) + "\n"))
    assert dataset.queries("og") == {"q1": "apples about fruit."}
    assert dataset.queries("changed") == {"q1": "apples no pears."}
    assert dataset.qrels("changed") == {"q1": {"d1": 0}}


@pytest.mark.parametrize(("text", "expected"), [
    ('{"_id": "q1", "query": "a", "instruction_og": "b", "instruction_changed": "c"}\n{"_id": "q2", "query": \n',
     "queries.jsonl:2: malformed JSON"),
    ('{"_id": "q1", "query": "a", "instruction_og": "b"}\n', "queries.jsonl:1: field 'instruction_changed': missing"),
    ('{"_id": "q1", "query": "a", "instruction_og": "b", "instruction_changed": 3}\n',
     "queries.jsonl:1: field 'instruction_changed': expected a non-empty string"),
])
def test_unparsable_instruction_file_exits_2(tmp_path, capsys, text, expected):
    folder = write_followir(tmp_path / "f", text)
    code, _, err = run_cli(capsys, "followir", folder)
    assert code == 2
    assert expected in error_line(err)


@pytest.mark.slow
def test_scifact_end_to_end(tmp_path, tiny_cross_encoder, capsys):
    source = require_shared("scifact")
    cmd = [sys.executable, str(ROOT / "bench" / "make_followir_scifact.py"), "--source", str(source),
           "--queries", "8", "--docs", "300", "--seed", "3"]
    for out in ("a", "b"):
        subprocess.run(cmd + ["--out", str(tmp_path / out)], check=True, capture_output=True, cwd=ROOT)
    for name in ("queries.jsonl", "corpus.jsonl", "qrels/og.tsv", "qrels/changed.tsv"):  # seeded
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    folder = tmp_path / "a"
    dataset = FollowIRDataset("a", folder)
    changed = changed_documents(dataset.qrels("og"), dataset.qrels("changed"))
    assert changed  # the changed instructions make judged documents non-relevant
    docs = {json.loads(line)["_id"]: json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        term = q["instruction_changed"].split('"')[1]
        for d in changed.get(q["_id"], []):  # every dropped document mentions the excluded term
            assert term in (docs[d]["title"] + " " + docs[d]["text"]).lower()
    systems = f"bm25,bm25>>cross-encoder:{tiny_cross_encoder}"
    code, out, err = run_cli(capsys, "followir", folder, "--systems", systems, "-k", "50", "--depth", "10",
                               "--json", "--out", tmp_path / "results")
    assert code == 0, err
    rows = json.loads(out)
    assert list(rows) == systems.split(",")
    for row in rows.values():
        assert -1.0 <= row["p-MRR"] <= 1.0 and 0.0 <= row["nDCG@5"] <= 1.0 and 0.0 <= row["AP@1000"] <= 1.0
    assert rows["bm25"]["nDCG@5"] > 0.3  # BM25 finds SciFact's evidence
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert [(e["split"], list(e["systems"])) for e in document["experiments"]] == [
        ("og", systems.split(",")), ("changed", systems.split(","))]
    per_query = document["followir"]["bm25"]["per_query"]
    assert set(per_query) == set(changed)
    # --json prints 6 decimals (rankwise.retrieval.json_output); results.json keeps full precision
    assert rows["bm25"]["p-MRR"] == pytest.approx(sum(per_query.values()) / len(per_query), abs=5e-7)
