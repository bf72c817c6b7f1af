"""Outputs and judgements a user can trust, tried through the real CLI (subprocesses).

- ``rankwise export`` builds in a temporary sibling folder and swaps it in whole: killed with -9 it
  leaves the previous export untouched (checked file by file against its manifest), a rerun removes
  what the killed run left, a failed parity check or a refused model leaves nothing under the final
  name, and a re-export lists exactly the files of its folder (no orphan ``model.int8.onnx``).
- Judgements are checked against the corpus: FollowIR ``og.tsv`` / ``changed.tsv`` and screening
  topics name a missing document in one line (file, line, id; exit 2); BEIR qrels count them in a
  warning, or refuse them with ``--missing-judged error``.
- The smaller cases: a teacher that fails to load in ``mine`` leaves no ``OUT.work``; a 1-column
  triples file; a 3-column screening qrels; a negative grade in ``train groupwise --runs`` qrels.

Every failing case ends in exactly one ``rankwise: error:`` line, exit status 2 and no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.retrieval.files import sha256_file
from tests._helpers import kill_when
from tests.conftest import write_beir
from rankwise.retrieval.engines import CROSS_ENCODER

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(*args: object, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m rankwise ARGS`` (or ``python -c PYTHON ARGS``, the CLI's main() after a patch)."""
    head = [sys.executable, "-c", python] if python else [sys.executable, "-m", "rankwise"]
    return subprocess.run(head + [str(a) for a in args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    """The one ``rankwise: error:`` line of a run that exited 2 without a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rankwise: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _check_export(folder: Path) -> dict:
    """The manifest of ``folder``, after checking that it lists exactly the folder's files, each with
    its checksum and size, and that no unfinished sibling folder is left beside it."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == present, "files not listed in the manifest, or listed and missing"
    for name, record in manifest["files"].items():
        assert (folder / name).stat().st_size == record["bytes"] and sha256_file(folder / name) == record["sha256"]
    assert not [p for p in folder.rglob("*") if p.is_dir()], "no sub-folder (a tokenizer or tmp folder) is left"
    assert not list(folder.parent.glob(f".{folder.name}.*")), "an unfinished build or a lock is left beside the export"
    return manifest


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# -- export -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_is_swapped_in_whole_and_survives_kill_and_failures(tiny_cross_encoder, tmp_path):
    out = tmp_path / "export"
    export = ("export", tiny_cross_encoder, out, "--kind", "cross-encoder")

    first = _run(*export, "--backend", "onnx-int8")
    assert first.returncode == 0, first.stderr[-3000:]
    assert {"model.onnx", "model.int8.onnx"} <= set(_check_export(out)["files"])
    before = _snapshot(out)

    # killed with -9 while the new graph is being written: the old export is whole, nothing half-written in it
    def writing() -> bool:
        return any(p.suffix in (".onnx", ".tmp") for d in tmp_path.glob(".export.*.partial") for p in d.iterdir())

    status = kill_when([sys.executable, "-m", "rankwise", *map(str, export)], writing, env=_env(), timeout=300)
    assert status is None, "the export ended before it could be killed"
    assert list(tmp_path.glob(".export.*.partial")), "the killed run worked beside the export"
    assert _snapshot(out) == before

    # the rerun (with --backend onnx) removes the killed run's folder and leaves no orphan int8 graph
    again = _run(*export)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = _check_export(out)
    assert "model.int8.onnx" not in manifest["files"] and not (out / "model.int8.onnx").exists()
    assert set(manifest["parity"]) == {"fp32"}
    before = _snapshot(out)

    # the int8 graph fails its parity check (forced: its record never passes) after both graphs are written
    # in the temporary folder: one line, exit 2, the export untouched
    patched = ("import sys; import rankwise.retrieval.backend.build as build; compare = build.compare; "
               "build.compare = lambda *a, **k: {**compare(*a, **k), 'passed': k['precision'] == 'fp32'}; "
               "from rankwise.cli import main; main(sys.argv[1:])")
    line = _one_error(_run(*export, "--backend", "onnx-int8", python=patched))
    assert "field 'parity'" in line and "parity check failed" in line
    assert _snapshot(out) == before
    _check_export(out)

    # a cross-encoder exported as a causal LM: refused before anything is written
    line = _one_error(_run("export", tiny_cross_encoder, out, "--kind", "causal-lm"))
    assert "config.json" in line and "not a causal LM" in line and "field 'architectures'" in line
    assert _snapshot(out) == before
    _check_export(out)


@pytest.mark.slow
def test_export_refuses_a_file_or_a_folder_of_other_things(tiny_cross_encoder, tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"not a folder")
    line = _one_error(_run("export", tiny_cross_encoder, target, "--kind", "cross-encoder"))
    assert str(target) in line and "is a file" in line
    assert target.read_bytes() == b"not a folder"
    from rankwise.retrieval.backend.cache import export_model
    from rankwise.retrieval.errors import InputError

    with pytest.raises(InputError, match="model.bin: exists and is a file"):  # from Python too
        export_model(str(tiny_cross_encoder), CROSS_ENCODER, target)

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine\n")
    line = _one_error(_run("export", tiny_cross_encoder, folder, "--kind", "cross-encoder"))
    assert f"{folder}: holds files that are not a rankwise export (todo.txt)" in line
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_atomic_dir_replaces_whole_and_restores_after_a_torn_swap(tmp_path):
    from rankwise.retrieval.files import atomic_dir, remove_stale_partials

    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("failed part-way")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", "old.txt"] and (final / "a.txt").read_text() == "one"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("two")
    assert [p.name for p in final.iterdir()] == ["a.txt"] and (final / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert oct(final.stat().st_mode & 0o777) == oct(0o777 & ~_umask())

    # a swap killed between its two renames (no renameat2): the old folder is moved back, the new one removed
    # (the process that left them has ended: its pid names them)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    final.rename(tmp_path / f".out.{dead.pid}.x.old")
    (tmp_path / f".out.{dead.pid}.y.partial").mkdir()
    remove_stale_partials(final)
    assert (final / "a.txt").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["out"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- judgements against the corpus --------------------------------------------------------------------------


def _followir(root: Path, og: str, changed: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i} apples"}) + "\n" for i in range(5)))
    line = {"_id": "q1", "query": "apples", "instruction_og": "about fruit.", "instruction_changed": "no pears."}
    (root / "queries.jsonl").write_text(json.dumps(line) + "\n")
    (root / "qrels" / "og.tsv").write_text("query-id\tcorpus-id\tscore\n" + og)
    (root / "qrels" / "changed.tsv").write_text("query-id\tcorpus-id\tscore\n" + changed)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("split", ["og", "changed"])
def test_followir_judging_a_missing_document_is_one_line(tmp_path, split):
    good, bad = "q1\td1\t1\n", "q1\td1\t1\nq1\td77\t0\n"
    root = _followir(tmp_path / "f", bad if split == "og" else good, bad if split == "changed" else good)
    line = _one_error(_run("followir", root))
    assert f"{root / 'qrels' / f'{split}.tsv'}:3: field 'corpus-id': document 'd77'" in line
    assert "--missing-judged warn" in line


def test_followir_and_beir_can_count_missing_documents_instead(tmp_path, caplog):
    from rankwise.eval.followir import FollowIRDataset
    from rankwise.retrieval.formats import Corpus, check_judged

    root = _followir(tmp_path / "f", "q1\td1\t1\nq1\td77\t1\nq1\td78\t0\n", "q1\td1\t0\n")
    with caplog.at_level(logging.WARNING):
        dataset = FollowIRDataset("f", root, missing_judged="warn")
    assert dataset.qrels("og") == {"q1": {"d1": 1, "d77": 1, "d78": 0}}  # kept, as BEIR's evaluation keeps them
    assert "2 of 3 judgements name documents that are not in the corpus (first: line 3, 'd77')" in caplog.text
    assert check_judged(root / "qrels" / "og.tsv", Corpus(root), "warn") == 2
    assert check_judged(root / "qrels" / "changed.tsv", Corpus(root), "error") == 0


@pytest.mark.slow
def test_beir_missing_judged_error_refuses_before_any_index_is_built(tmp_path):
    docs = [{"_id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(5)]
    root = write_beir(tmp_path / "b", docs, [{"_id": "q1", "text": "text"}], [("q1", "d1", 1), ("q1", "gone", 1)])
    line = _one_error(_run("beir", root, "--missing-judged", "error", "--out", tmp_path / "res"))
    assert f"{root / 'qrels' / 'test.tsv'}:3: field 'corpus-id': document 'gone'" in line
    assert not (tmp_path / "res").exists()


def _tar(root: Path, qrels: str, corpus_ids: list[str]) -> Path:
    (root / "topics").mkdir(parents=True)
    (root / "topics" / "CD1").write_text("Topic: CD1\n\nTitle: statins\n\nQuery:\nfoo\n\nPids:\n    1\n    2\n    3\n")
    (root / "qrels.txt").write_text(qrels)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": "statins"}) + "\n"
                                               for d in corpus_ids))
    return root


@pytest.mark.slow
def test_screening_topic_naming_a_missing_pmid_and_three_column_qrels(tmp_path):
    trec = "CD1 0 1 0\nCD1 0 2 1\nCD1 0 3 0\n"
    root = _tar(tmp_path / "a", trec, ["1", "3"])
    line = _one_error(_run("screening", root))
    assert f"{root / 'topics' / 'CD1'}:10: field 'pids': candidate PMID 2 of topic 'CD1' is not in" in line

    root = _tar(tmp_path / "b", "CD1 1 0\nCD1 2 1\n", ["1", "2", "3"])
    line = _one_error(_run("screening", root))
    assert f"{root / 'qrels.txt'}:1: expected 4 columns (TREC qrels: QUERY 0 DOC GRADE), got 3" in line


def test_screening_can_rank_missing_candidates_last(tmp_path, caplog):
    from rankwise.eval.screening import read_tar

    root = _tar(tmp_path / "a", "CD1 0 1 0\nCD1 0 2 1\nCD1 0 3 0\n", ["1", "3"])
    with caplog.at_level(logging.WARNING):
        tar = read_tar(root, missing_judged="warn")
    assert tar.topics["CD1"].pids == ["1", "2", "3"] and tar.topics["CD1"].pid_lines == {"1": 9, "2": 10, "3": 11}
    assert "1 of 3 candidate PMIDs are not in corpus.jsonl (first: 2, topic CD1)" in caplog.text


# -- mining and training inputs -----------------------------------------------------------------------------


@pytest.fixture()
def small_beir(tmp_path) -> Path:
    from rankwise.testing import corpus_texts

    texts = corpus_texts()[:60]
    docs = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(texts)]
    queries = [{"_id": f"q{i}", "text": texts[i * 7][:40]} for i in range(6)]
    return write_beir(tmp_path / "beir", docs, queries, [(f"q{i}", f"d{i * 7}", 1) for i in range(6)], split="train")


@pytest.mark.slow
def test_mine_with_a_teacher_that_fails_to_load_leaves_no_work_folder(small_beir, tiny_encoder, tmp_path):
    out = tmp_path / "triples.tsv"
    line = _one_error(_run("mine", "--corpus", small_beir, "--encoder", tiny_encoder, "--rank-window", "1:20",
                           "--teacher", f"cross-encoder:{tiny_encoder}", "--out", out))
    assert "sequence-classification head" in line
    assert not out.exists() and not out.with_name(out.name + ".work").exists()


@pytest.mark.slow
def test_training_inputs_name_what_the_file_holds(small_beir, tiny_cross_encoder, tiny_causal_lm, tmp_path):
    one = tmp_path / "one.tsv"
    one.write_text("q0\nq1\n")
    line = _one_error(_run("train", "cross-encoder", "--model", tiny_cross_encoder, "--triples", one,
                           "--corpus", small_beir, "--out", tmp_path / "ce"))
    assert f"{one}:1: field 'positive': 1 tab-separated column where triples need at least 3" in line
    assert "id triples need" not in line and not (tmp_path / "ce").exists()

    run = tmp_path / "run.trec"
    run.write_text("".join(f"q0 Q0 d{i} {i + 1} {10 - i} bm25\n" for i in range(5)))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\td1\t-2\n")
    line = _one_error(_run("train", "groupwise", "--model", tiny_causal_lm, "--runs", run, "--qrels", qrels,
                           "--queries", small_beir / "queries.jsonl", "--corpus", small_beir / "corpus.jsonl",
                           "--out", tmp_path / "gw"))
    assert f"{qrels}:3: field 'score': relevance grade -2 is negative" in line
