"""The ``rankwise`` command: bad input ends in one line naming file, line and field, and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.retrieval.json_output import rounded
from rankwise.retrieval.run import Run
from tests._helpers import error_line, run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', ":2: malformed JSON"),
        (b'{"_id": "a", "text": "x"}\n{"_id": "b"}\n', ":2: field 'text': missing"),
        (b'{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', ":2: field '_id': duplicate document id"),
        (b'{"_id": "a", "text": "\xff"}\n', ":1: not valid UTF-8"),
        (b"\n", ": the corpus is empty"),
    ],
)
def test_index_bad_corpus_exits_2_with_one_line(tmp_path, capsys, tiny_encoder, content, expected):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(content)
    code, out, err = run_cli(capsys, "index", corpus, "--out", tmp_path / "idx", "--retriever", "dense",
                               "--encoder", tiny_encoder)
    assert code == 2
    # the file, then its line and field, right after it: ``rankwise: error: PATH:LINE: field 'F': ...``
    assert error_line(err).startswith(f"rankwise: error: {corpus}{expected}")
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_bad_options_exit_2(tmp_path, capsys, synthetic_beir, tiny_encoder):
    code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", tmp_path / "i", "--index-type", "annoy",
                             "--encoder", tiny_encoder)
    assert code == 2 and error_line(err).startswith("rankwise: error: option '--index-type': 'annoy' is not one of 'flat'")
    code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", tmp_path / "i", "--retriever", "splade")
    assert code == 2 and error_line(err).startswith("rankwise: error: option '--retriever': 'splade' is not one of 'bm25'")
    code, _, err = run_cli(capsys, "beir", "no-such-dataset")
    assert code == 2 and error_line(err).startswith("rankwise: error: unknown dataset 'no-such-dataset': ")
    code, _, err = run_cli(capsys, "search", tmp_path / "nothing", "--queries", synthetic_beir, "--out", tmp_path / "r")
    assert code == 2 and error_line(err) == f"rankwise: error: {tmp_path / 'nothing'}: index folder not found"
    code, _, err = run_cli(capsys, "beir", synthetic_beir, "--first-stage-weight", "0.5")
    assert code == 2 and error_line(err).startswith("rankwise: error: field 'first_stage_weight': ")
    assert error_line(err).endswith("add --reranker")
    code, _, err = run_cli(capsys, "beir", synthetic_beir, "--reranker", "cross-encoder:x", "--first-stage-weight", "1")
    assert code == 2 and error_line(err) == ("rankwise: error: option '--first-stage-weight': must be within 0<=x<1, "
                                              "got 1.0")


def test_beir_missing_qrels_exits_2(tmp_path, capsys, synthetic_beir):
    code, _, err = run_cli(capsys, "beir", synthetic_beir, "--split", "dev")
    assert code == 2
    assert error_line(err).startswith(f"rankwise: error: {synthetic_beir / 'qrels' / 'dev.tsv'}: no qrels file for "
                                       "split 'dev'")


def test_index_search_and_model_mismatch(tmp_path, capsys, synthetic_beir, tiny_encoder, other_tiny_encoder):
    idx = tmp_path / "idx"
    code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", idx, "--encoder", tiny_encoder)
    assert code == 0, err
    code, _, err = run_cli(capsys, "search", idx, "--queries", synthetic_beir / "queries.jsonl", "-k", "7",
                             "--out", tmp_path / "run.trec")
    assert code == 0, err
    run = Run.read(tmp_path / "run.trec")
    assert len(run) == 10 and all(len(docs) == 7 for docs in run.values())
    code, _, err = run_cli(capsys, "search", idx, "--queries", synthetic_beir, "--encoder", other_tiny_encoder,
                             "--out", tmp_path / "run2.trec")
    assert code == 2 and error_line(err).startswith(f"rankwise: error: {idx / 'manifest.json'}: field "
                                                     "'encoder.fingerprint': the index was built with encoder")
    assert not (tmp_path / "run2.trec").exists()


def test_shard_and_merge_from_the_command_line(tmp_path, capsys, synthetic_beir, tiny_encoder):
    for i in range(2):
        code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", tmp_path / f"s{i}", "--encoder", tiny_encoder,
                                 "--shard", f"{i}/2", "--chunk-size", "100")
        assert code == 0, err
    code, _, err = run_cli(capsys, "index", "--merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert code == 0, err
    code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", tmp_path / "whole", "--encoder", tiny_encoder,
                             "--chunk-size", "100")
    assert code == 0, err
    merged = json.loads((tmp_path / "m" / "manifest.json").read_text())
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert merged["files"] == whole["files"]


def test_bm25_index_and_search(tmp_path, capsys, synthetic_beir):
    code, _, err = run_cli(capsys, "index", synthetic_beir, "--out", tmp_path / "bm25", "--retriever", "bm25")
    assert code == 0, err
    code, _, err = run_cli(capsys, "search", tmp_path / "bm25", "--queries", synthetic_beir, "--out",
                             tmp_path / "run.trec", "-k", "3")
    assert code == 0, err
    assert len(Run.read(tmp_path / "run.trec")) == 10


@pytest.mark.slow
def test_beir_json_prints_one_object_and_writes_results(tmp_path, synthetic_beir, tiny_encoder):
    """Through the installed entry point: stdout holds the JSON object and nothing else."""
    env_cmd = [sys.executable, "-m", "rankwise", "beir", f"{synthetic_beir},{synthetic_beir}", "--retriever",
               "hybrid", "--encoder", str(tiny_encoder), "--json", "--out", str(tmp_path / "out")]
    done = subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert list(result) == ["synthetic"]
    assert set(result["synthetic"]) == {"nDCG@10", "R@100", "RR@10", "AP@100"}
    assert all(0.0 <= v <= 1.0 for v in result["synthetic"].values())
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (saved["schema"], saved["version"]) == ("rankwise.results", 2)
    [entry] = saved["experiments"]  # one dataset, named twice: run once
    assert entry["dataset"] == "synthetic" and list(entry["systems"]) == ["hybrid-rrf"]
    assert rounded(entry["systems"]["hybrid-rrf"]["metrics"]) == result["synthetic"]  # --json: 6 digits
    assert set(entry["systems"]["hybrid-rrf"]["components"]) == {"bm25", "dense"}
    assert len(Run.read(tmp_path / "out" / "synthetic" / "hybrid-rrf.trec")) == 10
