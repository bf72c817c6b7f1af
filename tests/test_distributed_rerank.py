"""``rankwise rerank`` as a sharded, resumable job: ``torchrun --nproc_per_node 2`` writes the one-process
run byte for byte, a job killed part-way (SIGKILL of torchrun and both ranks) resumes without reranking
its finished parts, and parts made from other inputs are refused, never mixed in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.retrieval.errors import InputError
from tests._helpers import ROOT, free_port, kill_when, write_corpus

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
QUERIES, DOCS, DEPTH = 24, 120, 12


def _inputs(folder: Path) -> tuple[Path, Path, Path]:
    """A corpus, queries and a first-stage run (each query: DEPTH documents, descending scores)."""
    from rankwise.testing import corpus_texts

    texts = corpus_texts()[:DOCS]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(folder / "corpus.jsonl", texts)
    queries = folder / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": texts[(i * 5) % DOCS][:50]}) + "\n"
                               for i in range(QUERIES)), encoding="utf-8")
    run = folder / "bm25.trec"
    run.write_text("".join(f"q{i} Q0 d{(i * 7 + j) % DOCS} {j + 1} {DEPTH - j}.5 bm25\n"
                           for i in range(QUERIES) for j in range(DEPTH)), encoding="utf-8")
    return corpus, queries, run


def _torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]


def _rerank_cmd(prefix: list[str], inputs: tuple[Path, Path, Path], model: Path, out: Path, chunk: int) -> list[str]:
    corpus, queries, run = inputs
    return prefix + ["-m", "rankwise", "rerank", str(run), "--queries", str(queries), "--corpus", str(corpus),
                     "--reranker", f"cross-encoder:{model}", "--out", str(out), "--depth", "8", "--batch-size", "4",
                     "--chunk-size", str(chunk)]


def _rerank(command: list[str]) -> str:
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
def test_two_process_rerank_writes_the_one_process_run(tmp_path, tiny_cross_encoder):
    inputs = _inputs(tmp_path / "data")
    _rerank(_rerank_cmd([sys.executable], inputs, tiny_cross_encoder, tmp_path / "one.trec", chunk=5))
    log = _rerank(_rerank_cmd(_torchrun(free_port()), inputs, tiny_cross_encoder, tmp_path / "two.trec", chunk=5))
    one, two = (tmp_path / "one.trec").read_bytes(), (tmp_path / "two.trec").read_bytes()
    assert two == one
    assert len(one.decode().splitlines()) == QUERIES * DEPTH
    assert not (tmp_path / "two.trec.work").exists()
    # 5 chunks of queries: rank 0 reranks 0, 2, 4 and rank 1 reranks 1, 3
    counts = sorted(int(a) for a in re.findall(r"(\d+) parts computed in this run", log))
    assert counts == [2, 3], log[-3000:]


@pytest.mark.slow
def test_killed_two_process_rerank_resumes_without_reranking_finished_parts(tmp_path, tiny_cross_encoder):
    inputs = _inputs(tmp_path / "data")
    out = tmp_path / "killed.trec"
    command = _rerank_cmd(_torchrun(free_port()), inputs, tiny_cross_encoder, out, chunk=1)

    def finished() -> list[Path]:
        return sorted((tmp_path / "killed.trec.work").glob("part-*.trec"))

    status = kill_when(command, lambda: len(finished()) >= 3, env=ENV)
    assert status is None, "the job ended before it could be killed"
    before = len(finished())
    assert 3 <= before < QUERIES, "the job must be killed part-way"
    assert not out.exists()

    log = _rerank(command)
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+) parts computed in this run, (\d+) kept", log)]
    assert len(counts) == 2, log[-3000:]
    assert sum(b for _, b in counts) == before  # kept: every part on disk at the kill
    assert sum(a for a, _ in counts) == QUERIES - before  # reranked: only the others
    _rerank(_rerank_cmd([sys.executable], inputs, tiny_cross_encoder, tmp_path / "one.trec", chunk=1))
    assert out.read_bytes() == (tmp_path / "one.trec").read_bytes()
    assert not (tmp_path / "killed.trec.work").exists()


def _crash_after(monkeypatch, parts: int) -> None:
    """Make the next job die (as a kill would) after writing ``parts`` chunks."""
    import rankwise.rerank.job as job

    real, calls = job._rerank_chunk, []

    def chunk(*args, **kwargs):
        if len(calls) == parts:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "_rerank_chunk", chunk)


def test_rerank_job_resumes_and_refuses_other_inputs(tmp_path, tiny_cross_encoder, monkeypatch):
    from rankwise.rerank.job import rerank_file

    corpus, queries, run = _inputs(tmp_path / "data")
    spec = f"cross-encoder:{tiny_cross_encoder}"
    clean = rerank_file(run, queries, corpus, spec, tmp_path / "clean.trec", depth=8, chunk_size=5, progress=False)
    assert (clean.chunks, clean.computed_chunks, clean.kept_chunks) == (5, 5, 0)

    out = tmp_path / "out.trec"
    with monkeypatch.context() as patch:
        _crash_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            rerank_file(run, queries, corpus, spec, out, depth=8, chunk_size=5, progress=False)
    assert not out.exists() and len(list((tmp_path / "out.trec.work").glob("part-*.trec"))) == 2

    with pytest.raises(InputError, match="depth differ"):  # parts of depth 8 are never mixed into a depth-6 run
        rerank_file(run, queries, corpus, spec, out, depth=6, chunk_size=5, progress=False)
    with run.open("a", encoding="utf-8") as fh:  # another first-stage run: refused as well
        fh.write(f"q0 Q0 d{DOCS - 1} 99 0.1 bm25\n")
    with pytest.raises(InputError, match="run differ"):
        rerank_file(run, queries, corpus, spec, out, depth=8, chunk_size=5, progress=False)
    run.write_text("".join(run.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")

    resumed = rerank_file(run, queries, corpus, spec, out, depth=8, chunk_size=5, progress=False)
    assert (resumed.computed_chunks, resumed.kept_chunks) == (3, 2)
    assert out.read_bytes() == (tmp_path / "clean.trec").read_bytes()
    assert resumed.counts == clean.counts and clean.counts["passages"] == QUERIES * 8
    assert not (tmp_path / "out.trec.work").exists()

    with monkeypatch.context() as patch:  # with --force, parts made another way are discarded
        _crash_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            rerank_file(run, queries, corpus, spec, out, depth=6, chunk_size=5, progress=False)
    forced = rerank_file(run, queries, corpus, spec, out, depth=8, chunk_size=5, progress=False, force=True)
    assert (forced.computed_chunks, forced.kept_chunks) == (5, 0)
    assert out.read_bytes() == (tmp_path / "clean.trec").read_bytes()


@pytest.mark.slow
def test_two_process_mining_with_a_teacher_writes_the_one_process_files(tmp_path, synthetic_beir, tiny_encoder,
                                                                          tiny_cross_encoder):
    """``mine --teacher`` under torchrun: each rank mines (and has the teacher score) its chunks of
    queries; triples and Margin-MSE scores are byte-identical to one process."""
    env = {**ENV, "RANKWISE_CACHE": os.environ["RANKWISE_CACHE"]}
    index = tmp_path / "idx"
    done = subprocess.run([sys.executable, "-m", "rankwise", "index", str(synthetic_beir / "corpus.jsonl"), "--out",
                           str(index), "--encoder", str(tiny_encoder)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    def mine(prefix: list[str], name: str) -> str:
        command = prefix + ["-m", "rankwise", "mine", "--corpus", str(synthetic_beir), "--queries",
                            str(synthetic_beir / "queries.jsonl"), "--qrels", str(synthetic_beir / "qrels" / "test.tsv"),
                            "--index", str(index), "--teacher", f"cross-encoder:{tiny_cross_encoder}",
                            "--teacher-pool", "0", "--rank-window", "0:30", "--negatives", "3", "--chunk-size", "2",
                            "--out", str(tmp_path / f"{name}.tsv"), "--scores", str(tmp_path / f"{name}.scores.tsv")]
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stderr

    log_one = mine([sys.executable], "one")
    log = mine(_torchrun(free_port()), "two")
    for suffix in (".tsv", ".scores.tsv"):
        one, two = (tmp_path / f"one{suffix}").read_bytes(), (tmp_path / f"two{suffix}").read_bytes()
        assert two == one and one, (suffix, log_one[-2000:])
    counts = sorted(int(a) for a in re.findall(r"(\d+) parts computed in this run", log))
    assert counts == [2, 3], log[-3000:]  # 10 queries, 5 chunks: 3 on rank 0, 2 on rank 1
    assert log.count("triples from 10 queries") == 1  # rank 0 reports the whole job


@pytest.mark.slow
def test_two_process_beir_reranker_evaluates_as_one_process_and_rank_zero_alone_writes(tmp_path, synthetic_beir,
                                                                                        tiny_cross_encoder):
    env = {**ENV, "RANKWISE_CACHE": str(tmp_path / "cache")}

    def beir(prefix: list[str], out: Path) -> tuple[dict, str]:
        command = prefix + ["-m", "rankwise", "beir", str(synthetic_beir), "--reranker",
                            f"cross-encoder:{tiny_cross_encoder},batch_size=4", "--depth", "8", "-k", "20",
                            "--out", str(out), "--json"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout), done.stderr  # one JSON object: one rank printed

    one, _ = beir([sys.executable], tmp_path / "one")
    two, log = beir(_torchrun(free_port()), tmp_path / "two")
    assert two == one
    docs = [json.loads((tmp_path / d / "results.json").read_text())["experiments"][0]["systems"] for d in ("one", "two")]
    (name, a), = docs[0].items()
    b = docs[1][name]
    assert a["metrics"] == b["metrics"]
    # every query was reranked once, by one rank or the other; the counts are summed over the ranks
    assert (b["stats"]["rerank"]["lists"], b["stats"]["rerank"]["passages"]) == (10, 80)
    assert b["stats"]["rerank"] == {**a["stats"]["rerank"], "forward_passes": b["stats"]["rerank"]["forward_passes"]}
    assert log.count("runs and results.json written to") == 1
    assert log.count("cost: cross-encoder reranking") == 1  # rank 0's line alone
