"""The shell around every ``rankwise`` command, run as a real subprocess (``python -m rankwise``) or, for the
many usage and value cases, through the same entry point in this process (``rankwise_here``; a sample of them
runs through the real process too, and must print the same):

* usage errors print click's usage message and exit 2;
* a bad option or spec value is one line naming the option (or the spec key) and exit 2, refused before
  any model loads or any file is touched: the corpus, the models and the indexes named below do not
  exist, so a value checked any later would fail on them instead;
* SIGINT exits 130 and SIGTERM 143 with one line saying what was kept, and the rerun resumes;
* nothing a user types ends in a Python traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

NOWHERE = "/nonexistent/rankwise-test"  # a corpus, model, index or run that does not exist
MODEL = f"{NOWHERE}/model"
SPEC = f"cross-encoder:{MODEL}"


def rankwise(*args: object, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("RANKWISE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "rankwise", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def rankwise_here(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rankwise ARGS`` through ``rankwise.cli.main`` in this process, as :func:`rankwise` returns it: without
    starting Python and importing the libraries again for each of the cases below."""
    from rankwise.cli import main

    out, err, code, here = io.StringIO(), io.StringIO(), 0, os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([str(a) for a in args])
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


USAGE_ERRORS = {
    "unknown command": (["frobnicate"], "No such command 'frobnicate'"),
    "unknown train command": (["train", "frobnicate"], "No such command 'frobnicate'"),
    "missing option": (["search", NOWHERE, "--out", "z.trec"], "Missing option '--queries'"),
    "missing argument": (["index", "--out", "x"], "Missing argument"),
    "missing argument beir": (["beir"], "Missing argument"),
    "missing options train": (["train", "bi-encoder"], "Missing option"),
    "missing qrels compare": (["compare", "a.trec"], "Missing option '--qrels'"),
    "missing out mine": (["mine", "--corpus", NOWHERE], "Missing option '--out'"),
    "unknown option": (["search", NOWHERE, "--queries", "q", "--out", "z", "--bogus"], "No such option: --bogus"),
    "unknown option serve": (["serve", "--bogus"], "No such option: --bogus"),
    "option without value": (["search", NOWHERE, "--queries", "q", "--out", "z", "-k"], "requires an argument"),
    "missing value of train option": (["train", "groupwise", "--model", MODEL, "--out", "o", "--levels"],
                                       "requires an argument"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_error_is_clicks_message_and_exit_2(case):
    args, message = USAGE_ERRORS[case]
    result = rankwise_here(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Error: {message}" in result.stderr or message in result.stderr
    assert "Usage: rankwise" in result.stderr or "requires an argument" in result.stderr


# (arguments, what the one error line must contain: the option or the spec key)
VALUE_ERRORS = {
    # search / index / export
    "search -k 0": (["search", NOWHERE, "--queries", NOWHERE, "--out", "r.trec", "-k", "0"], "'-k': must be >= 1"),
    "search -k -5": (["search", NOWHERE, "--queries", NOWHERE, "--out", "r.trec", "-k", "-5"], "'-k': must be >= 1"),
    "search -k abc": (["search", NOWHERE, "--queries", NOWHERE, "--out", "r.trec", "-k", "abc"], "'-k': "),
    "search --batch-size 0": (["search", NOWHERE, "--queries", NOWHERE, "--out", "r.trec", "--batch-size", "0"],
                              "'--batch-size': must be >= 1"),
    "search --backend": (["search", NOWHERE, "--queries", NOWHERE, "--out", "r.trec", "--backend", "tf"],
                         "'--backend': 'tf' is not one of 'torch'"),
    "search --out folder": (["search", NOWHERE, "--queries", NOWHERE, "--out", "{dir}"], "'--out': file '{dir}' is a "
                                                                                          "directory"),
    "index --nlist 0": (["index", NOWHERE, "--out", "{tmp}/idx", "--encoder", MODEL, "--index-type", "ivf", "--nlist",
                         "0"], "'--nlist': must be >= 1"),
    "index --pq-m 0": (["index", NOWHERE, "--out", "{tmp}/idx", "--index-type", "ivfpq", "--pq-m", "0"],
                       "'--pq-m': must be >= 1"),
    "index --chunk-size 0": (["index", NOWHERE, "--out", "{tmp}/idx", "--encoder", MODEL, "--chunk-size", "0"],
                             "'--chunk-size': must be >= 1"),
    "index --batch-size -1": (["index", NOWHERE, "--out", "{tmp}/idx", "--encoder", MODEL, "--batch-size", "-1"],
                              "'--batch-size': must be >= 1, got -1"),
    "index --max-tokens 0": (["index", NOWHERE, "--out", "{tmp}/idx", "--max-tokens", "0"], "'--max-tokens'"),
    "index --threads 0": (["index", NOWHERE, "--out", "{tmp}/idx", "--retriever", "bm25", "--threads", "0"],
                          "'--threads'"),
    "index --index-type": (["index", NOWHERE, "--out", "{tmp}/idx", "--index-type", "annoy"],
                           "'--index-type': 'annoy' is not one of 'flat', 'hnsw', 'ivf', 'ivfpq'"),
    "index --retriever": (["index", NOWHERE, "--out", "{tmp}/idx", "--retriever", "splade"], "'--retriever'"),
    "index --out file": (["index", NOWHERE, "--out", "{file}"], "'--out': dir '{file}' is a file"),
    "export --kind": (["export", MODEL, "{tmp}/onnx", "--kind", "t5"], "'--kind': 't5' is not one of"),
    "export into a file": (["export", MODEL, "{file}"], "{file}: exists and is a file"),
    "export --max-length 0": (["export", MODEL, "{tmp}/onnx", "--max-length", "0"], "'--max-length'"),
    # rerank and its spec keys
    "rerank --out folder": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker", SPEC, "--out",
                             "{dir}"], "'--out': file '{dir}' is a directory"),
    "rerank --depth 0": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker", SPEC, "--out",
                          "r.trec", "--depth", "0"], "'--depth': must be >= 1"),
    "rerank --first-stage-weight 1": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker", SPEC,
                                       "--out", "r.trec", "--first-stage-weight", "1"],
                                      "'--first-stage-weight': must be within 0<=x<1"),
    "spec batch_size=-3": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                            SPEC + ",batch_size=-3", "--out", "r.trec"], "batch_size=-3: must be >= 1, got -3"),
    "spec batch_size=0": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                           SPEC + ",batch_size=0", "--out", "r.trec"], "batch_size=0: must be >= 1"),
    "spec max_length=abc": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                             SPEC + ",max_length=abc", "--out", "r.trec"], "max_length='abc': must be an integer"),
    "spec group_size=1": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                           f"groupwise:{MODEL},group_size=1", "--out", "r.trec"], "group_size=1: must be within 2<=x"),
    "spec window=30": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                        f"listwise:{MODEL},window=30", "--out", "r.trec"], "window=30: must be within 1<=x<=26"),
    "spec passages=0": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                         SPEC + ",passages=0", "--out", "r.trec"], "passages=0: must be >= 1"),
    "spec backend": (["rerank", NOWHERE, "--queries", NOWHERE, "--corpus", NOWHERE, "--reranker",
                      SPEC + ",backend=tensorrt", "--out", "r.trec"], "backend=tensorrt: must be one of torch"),
    # serve
    "serve --port 70000": (["serve", "--reranker", SPEC, "--port", "70000"], "'--port': must be within 1<=x<=65535"),
    "serve --port 0": (["serve", "--reranker", SPEC, "--port", "0"], "'--port'"),
    "serve --max-k 0": (["serve", "--reranker", SPEC, "--max-k", "0"], "'--max-k': must be >= 1"),
    "serve --max-batch-delay -1": (["serve", "--reranker", SPEC, "--max-batch-delay", "-1"], "'--max-batch-delay'"),
    # mine
    "mine --teacher-pool -1": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--teacher-pool", "-1"],
                               "'--teacher-pool': must be >= 0"),
    "mine --negatives 0": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--negatives", "0"],
                           "'--negatives': must be >= 1"),
    "mine --chunk-size 0": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--chunk-size", "0"],
                            "'--chunk-size'"),
    "mine --sampling": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--sampling", "best"], "'--sampling'"),
    "mine --out folder": (["mine", "--corpus", NOWHERE, "--out", "{dir}"], "'--out': file '{dir}' is a directory"),
    # train
    "train --max-steps 0": (["train", "cross-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                             "--max-steps", "0"], "'--max-steps': must be >= 1, got 0"),
    "train --max-steps -1": (["train", "bi-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                              "--max-steps", "-1"], "'--max-steps': must be >= 1, got -1"),
    "train --batch-size 0": (["train", "bi-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                              "--batch-size", "0"], "'--batch-size'"),
    "train --lr 0": (["train", "bi-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m", "--lr", "0"],
                     "'--lr': must be > 0"),
    "train --warmup-ratio 1": (["train", "cross-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                                "--warmup-ratio", "1"], "'--warmup-ratio': must be within 0<=x<1"),
    "train --epochs 0": (["train", "cross-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                          "--epochs", "0"], "'--epochs': must be > 0"),
    "train --curriculum": (["train", "cross-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{tmp}/m",
                            "--curriculum", "hard"], "'--curriculum'"),
    "train --out file": (["train", "bi-encoder", "--model", MODEL, "--triples", NOWHERE, "--out", "{file}"],
                         "'--out': dir '{file}' is a file"),
    "train groupwise --group-size 1": (["train", "groupwise", "--model", MODEL, "--out", "{tmp}/m", "--runs", NOWHERE,
                                        "--group-size", "1"], "'--group-size': must be within 2<=x<=26, got 1"),
    "train groupwise --levels 0": (["train", "groupwise", "--model", MODEL, "--out", "{tmp}/m", "--runs", NOWHERE,
                                    "--levels", "0"], "'--levels': must be within 1<=x<=99, got 0"),
    "train listwise --window 1": (["train", "listwise", "--model", MODEL, "--out", "{tmp}/m", "--window", "1"],
                                  "'--window'"),
    "train idcm --passages 0": (["train", "idcm-selector", "--corpus", NOWHERE, "--scorer", MODEL, "--out", "{tmp}/m",
                                 "--passages", "0"], "'--passages'"),
    # evaluation
    "beir -k -1": (["beir", NOWHERE, "-k", "-1"], "'-k': must be >= 1, got -1"),
    "beir -k 0": (["beir", NOWHERE, "-k", "0"], "'-k': must be >= 1, got 0"),
    "beir --alpha 2": (["beir", NOWHERE, "--alpha", "2"], "'--alpha': must be within 0<=x<=1"),
    "beir --depth 0": (["beir", NOWHERE, "--depth", "0"], "'--depth'"),
    "beir --significance 1": (["beir", NOWHERE, "--significance", "1"], "'--significance'"),
    "beir --reranker spec": (["beir", NOWHERE, "--reranker", SPEC + ",batch_size=0"], "batch_size=0: must be >= 1"),
    "beir --out file": (["beir", NOWHERE, "--out", "{file}"], "'--out': dir '{file}' is a file"),
    "beir --fusion": (["beir", NOWHERE, "--fusion", "max"], "'--fusion'"),
    "compare --significance 1.5": (["compare", NOWHERE, "--qrels", NOWHERE, "--significance", "1.5"],
                                   "'--significance': must be within 0<x<1"),
    "compare --seed -1": (["compare", NOWHERE, "--qrels", NOWHERE, "--seed", "-1"], "'--seed': must be >= 0"),
    "followir -k 0": (["followir", NOWHERE, "-k", "0"], "'-k'"),
    "followir --backend": (["followir", NOWHERE, "--backend", "tf"], "'--backend'"),
    "screening --batch-size 0": (["screening", NOWHERE, "--batch-size", "0"], "'--batch-size'"),
    "screening --per-query folder": (["screening", NOWHERE, "--per-query", "{dir}"], "'--per-query'"),
    "position-bias --buckets 0": (["position-bias", NOWHERE, "--buckets", "0"], "'--buckets': must be >= 1"),
    "position-bias --format": (["position-bias", NOWHERE, "--format", "latex"], "'--format'"),
    # choices that were free strings checked by hand: refused while the command line is parsed
    "beir --test": (["beir", NOWHERE, "--systems", "bm25", "--test", "wilcoxon"], "'--test': 'wilcoxon' is not one of"),
    "compare --correction": (["compare", NOWHERE, "--qrels", NOWHERE, "--correction", "fdr"], "'--correction'"),
    "beir --format": (["beir", NOWHERE, "--systems", "bm25", "--format", "html"], "'--format'"),
    "mine --retriever": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--retriever", "splade"],
                         "'--retriever'"),
    # renamed options (one name per concept)
    "mine --rank-window": (["mine", "--corpus", NOWHERE, "--out", "{tmp}/t.tsv", "--rank-window", "9:3"],
                           "'--rank-window': '9:3' is not a rank window"),
    "train listwise --candidates 0": (["train", "listwise", "--model", MODEL, "--out", "{tmp}/m", "--runs", NOWHERE,
                                       "--candidates", "0"], "'--candidates': must be >= 1"),
    "train groupwise --pg-temperature 0": (["train", "groupwise", "--model", MODEL, "--out", "{tmp}/m", "--runs",
                                            NOWHERE, "--pg-temperature", "0"], "'--pg-temperature': must be > 0"),
    "serve --encoder": (["serve", "--encoder", MODEL, "--port", "0"], "'--port'"),
}


@pytest.mark.parametrize("case", list(VALUE_ERRORS))
def test_bad_value_is_one_line_naming_the_option(case, tmp_path):
    args, expected = VALUE_ERRORS[case]
    a_file, a_dir = tmp_path / "a-file", tmp_path / "a-folder"
    a_file.write_text("x\n")
    a_dir.mkdir()

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{file}", str(a_file)).replace("{dir}", str(a_dir))

    before = sorted(p.name for p in tmp_path.iterdir())
    result = rankwise_here(*map(fill, args), cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("rankwise: error: "), result.stderr
    assert fill(expected) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written: no OUT, no .work, no checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("args", [["frobnicate"], ["search", NOWHERE, "--queries", "q", "--out", "z", "-k", "0"],
                                  ["serve", "--bogus"]])
def test_the_real_process_answers_as_the_entry_point_does(args, tmp_path):
    """``python -m rankwise`` prints and exits exactly as ``rankwise_here`` reports (a sample of the cases above)."""
    real, here = rankwise(*args, cwd=tmp_path), rankwise_here(*args, cwd=tmp_path)
    assert real.returncode == here.returncode == 2
    assert real.stderr == here.stderr and real.stdout == here.stdout


@pytest.mark.slow
def test_model_folder_without_model_type_is_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 8}))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n')
    result = rankwise("index", corpus, "--out", tmp_path / "idx", "--encoder", model)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"rankwise: error: {model / 'config.json'}: field 'model_type': "
                                                      "missing: transformers needs it to know which model this is "
                                                      '(e.g. "bert")')
    assert not (tmp_path / "idx").exists()


@pytest.mark.slow
def test_help_states_ranges_choices_and_exit_statuses():
    result = rankwise("search", "--help")
    assert result.returncode == 0
    assert "(x>=1)" in result.stdout and "torch|onnx" in result.stdout
    top = rankwise("--help")
    assert "130" in top.stdout and "143" in top.stdout
    mine = rankwise("mine", "--help")
    assert "0: the whole window" in mine.stdout


@pytest.mark.slow
def test_internal_error_is_one_line_unless_debug(tmp_path):
    """A bug (an exception no check turned into bad input) is one line and exit 1; RANKWISE_DEBUG=1 shows it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RANKWISE_DEBUG="1")
    code = ("import sys; from rankwise import cli\n"
            "def boom(): raise RuntimeError('a bug')\n"
            "cli.app.command('boom')(boom)\n"
            "cli.main(sys.argv[1:])\n")
    for debug in ("0", "1"):
        env["RANKWISE_DEBUG"] = debug
        result = subprocess.run([sys.executable, "-c", code, "boom"], capture_output=True, text=True, env=env,
                                timeout=120)
        assert result.returncode == 1
        if debug == "1":
            assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr
        else:
            assert result.stderr.strip() == ("rankwise: internal error: RuntimeError: a bug (set RANKWISE_DEBUG=1 to "
                                             "see the traceback)")


def _corpus(folder: Path, docs: int) -> Path:
    from rankwise.testing import corpus_texts

    texts = corpus_texts()
    folder.mkdir()
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i in range(docs):
            fh.write(json.dumps({"_id": f"d{i}", "text": texts[i % len(texts)]}) + "\n")
    return folder / "corpus.jsonl"


def _interrupt(args: list[str], sig: int, started: re.Pattern[str], timeout: float = 300) -> tuple[int, str]:
    """Start ``rankwise ARGS``, send ``sig`` once stderr matches ``started``; its exit status and stderr."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "rankwise", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        buffer = ""
        while True:
            char = proc.stderr.read(1)
            if not char:
                ready.set()
                return
            buffer += char
            if char in "\r\n":
                seen.append(buffer)
                if started.search(buffer):
                    ready.set()
                buffer = ""

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout), "the command did not start in time"
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(sig)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    return code, "".join(seen)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupted_index_build_exits_130_or_143_and_resumes(tmp_path, tiny_encoder, sig, status, name):
    corpus = _corpus(tmp_path / "corpus", 160)
    out = tmp_path / "idx"
    args = ["index", str(corpus), "--out", str(out), "--encoder", str(tiny_encoder), "--chunk-size", "4",
            "--batch-size", "1"]
    started = time.monotonic()
    code, err = _interrupt(args, sig, re.compile(r"indexing corpus\.jsonl:.*\|\s*(?:[2-9]|\d\d+)/160"))
    assert code == status, err
    assert "Traceback" not in err
    last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert last == (f"rankwise: interrupted ({name}): the finished chunks are kept in OUT's work folder; rerun the "
                    "same command to resume")
    assert not (out / "manifest.json").exists()
    rerun = rankwise(*args, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "manifest.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["count"] == 160
    assert time.monotonic() - started < 900


class _LabelsLM:
    """Just enough of a CausalLM for a reranker's constructor: each identifier is one token."""

    def single_token_ids(self, labels):
        return list(range(len(labels)))


@pytest.mark.parametrize(("window", "stride"), [(1, 1), (2, 1), (5, 2), (20, 10), (26, 10)])
def test_listwise_stride_follows_an_unset_window(window, stride):
    """``window=1`` (or any window under 20) does not trip over a stride the user never set."""
    from rankwise.rerank.elimination import EliminationReranker
    from rankwise.rerank.listwise import ListwiseReranker

    assert ListwiseReranker(_LabelsLM(), window=window).stride == stride
    if window >= 2:
        assert EliminationReranker(_LabelsLM(), window=window).stride == stride


def test_spec_keys_share_the_option_ranges():
    """One mechanism: a spec key is checked by the Range an option uses, with the key in the message."""
    from rankwise.rerank.spec import KEY_VALUES, parse_spec
    from rankwise.retrieval.errors import InputError
    from rankwise.retrieval.values import positive_int

    assert KEY_VALUES["batch_size"] is positive_int
    assert parse_spec("cross-encoder:m,batch_size=8,max_length=128").options == {"batch_size": 8, "max_length": 128}
    assert parse_spec("listwise:m,window=1").options == {"window": 1}
    for spec, message in [("cross-encoder:m,batch_size=0", "batch_size=0: must be >= 1, got 0"),
                          ("cross-encoder:m,max_length=abc", "max_length='abc': must be an integer"),
                          ("listwise:m,window=8,stride=0", "stride=0: must be >= 1, got 0"),
                          ("groupwise:m,levels=100", "levels=100: must be within 1<=x<=99, got 100"),
                          ("pointwise-llm:m,batch_size=1.5", "batch_size='1.5': must be an integer")]:
        with pytest.raises(InputError) as err:
            parse_spec(spec)
        assert str(err.value) == f"field 'reranker': {message}"


@pytest.mark.slow
def test_self_hits_kept_for_a_qrels_file_dropped_for_beir_and_switchable(tmp_path):
    """The qid == docid rule: off for a plain qrels file, on for a BEIR folder, both switchable."""
    (tmp_path / "run.trec").write_text("q1 Q0 q1 1 2.0 x\nq1 Q0 d1 2 1.0 x\nq2 Q0 d2 1 1.0 x\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": i}) + "\n" for i in ("q1", "d1", "d2")))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": i}) + "\n" for i in ("q1", "q2")))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")

    def rr(*args: object) -> tuple[float, str]:
        result = rankwise("compare", tmp_path / "run.trec", *args, "--measures", "RR@10", "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["systems"][0]["RR@10"], result.stderr

    kept, err = rr("--qrels", tmp_path / "qrels.txt")
    assert kept == pytest.approx(0.75) and "dropped" not in err
    assert rr("--qrels", tmp_path / "qrels.txt", "--drop-self-hits")[0] == pytest.approx(1.0)
    dropped, err = rr("--qrels", beir)
    assert dropped == pytest.approx(1.0) and "--keep-self-hits keeps them" in err
    assert rr("--qrels", beir, "--keep-self-hits")[0] == pytest.approx(0.75)


def test_results_json_records_the_self_hit_rule():
    from types import SimpleNamespace

    import pandas as pd

    from rankwise.eval.compare import compare_per_query
    from rankwise.eval.experiment import ExperimentResult, drops_self_hits, results_document

    beir, msmarco = SimpleNamespace(ignore_identical_ids=True), SimpleNamespace(ignore_identical_ids=False)
    assert (drops_self_hits(beir), drops_self_hits(msmarco)) == (True, False)
    assert (drops_self_hits(beir, False), drops_self_hits(msmarco, True)) == (False, True)
    values = pd.DataFrame([("s", "q", "nDCG@10", 0.5)], columns=["system", "query_id", "measure", "value"])
    result = ExperimentResult("arguana", "test", 3, 100, ["nDCG@10"], {}, values, compare_per_query(values),
                              drop_self_hits=False)
    assert results_document([result])["experiments"][0]["drop_self_hits"] is False