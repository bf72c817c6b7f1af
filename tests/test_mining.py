"""Hard-negative mining: rank window, exclusions, seeded sampling, teacher filtering, resume, CLI."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from rankwise.rerank.base import Reranker
from rankwise.retrieval.cached import cached_retriever, index_root
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus, read_qrels, read_queries
from rankwise.retrieval.run import Run
from tests.conftest import write_beir
from rankwise.training.mining import MiningStats, mine_negatives, parse_rank_window
from tests._helpers import run_cli

N_QUERIES = 24


@pytest.fixture()
def beir(tmp_path) -> Path:
    """400 documents; 24 judged queries (1-2 positives, some grade-0 judgements, one without positives)."""
    from rankwise.testing import corpus_texts

    texts = corpus_texts()
    docs = [{"_id": f"d{i}", "title": f"title {i % 7}", "text": t} for i, t in enumerate(texts)]
    queries = [{"_id": f"q{i}", "text": texts[i * 13][:50]} for i in range(N_QUERIES + 1)]  # q24 is not judged
    qrels = []
    for i in range(N_QUERIES - 1):
        qrels.append((f"q{i}", f"d{i * 13}", 1))
        if i % 2 == 0:
            qrels.append((f"q{i}", f"d{i * 13 + 1}", 2))
        if i % 5 == 0:
            qrels.append((f"q{i}", f"d{i * 13 + 2}", 0))
    qrels.append((f"q{N_QUERIES - 1}", "d399", 0))  # judged, but nothing relevant
    return write_beir(tmp_path / "minebeir", docs, queries, qrels, split="train")


def _paths(beir: Path) -> tuple[Corpus, Path, Path]:
    return Corpus(beir), beir / "queries.jsonl", beir / "qrels" / "train.tsv"


class HashRetriever:
    """A deterministic stand-in retriever: ranks every document by crc32(query id + doc id)."""

    def __init__(self, corpus: Corpus) -> None:
        self.ids = [d.doc_id for d in corpus]
        self.calls = 0

    def describe(self) -> dict:
        return {"kind": "hash"}

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
        self.calls += 1
        return Run({q: sorted(((d, zlib.crc32(f"{q}/{d}".encode()) / 2**32) for d in self.ids),
                              key=lambda x: -x[1])[:k] for q in queries})


class InterruptingRetriever(HashRetriever):
    """Fails on its second search, as a killed process would after its first chunk."""

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
        if self.calls == 1:
            raise KeyboardInterrupt
        return super().search(queries, k, progress)


class TableTeacher(Reranker):
    """A reranker whose scores come from a table (document text -> score)."""

    name = "table"

    def __init__(self, table: dict[str, float]) -> None:
        super().__init__()
        self.table = table

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        return [[self.table[t] for t in texts] for _, texts in lists]


def _teacher(beir: Path) -> tuple[TableTeacher, dict[str, float]]:
    """Positives score 1.0; other documents a pseudo-random score in [0, 1.25)."""
    qrels = read_qrels(beir / "qrels" / "train.tsv")
    relevant = {d for docs in qrels.values() for d, g in docs.items() if g > 0}
    by_id = {doc.doc_id: (1.0 if doc.doc_id in relevant else zlib.crc32(doc.doc_id.encode()) / 2**32 * 1.25)
             for doc in Corpus(beir)}
    table = {doc.full_text: by_id[doc.doc_id] for doc in Corpus(beir)}
    return TableTeacher(table), by_id


def _triples(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


def test_parse_rank_window():
    assert parse_rank_window("10:100") == (10, 100)
    assert parse_rank_window(":30") == (0, 30)
    for bad in ("100:10", "x", "5", "10:10", "-1:5", "a:b"):
        with pytest.raises(InputError, match="rank window"):
            parse_rank_window(bad)


def test_negatives_come_from_the_window_of_the_retrievers_run_and_never_are_positives(beir, tiny_encoder):
    corpus, queries, qrels_path = _paths(beir)
    retriever = cached_retriever(corpus, "dense", str(tiny_encoder), progress=False)
    out = beir.parent / "triples.tsv"
    stats = mine_negatives(corpus, queries, qrels_path, retriever, window=(3, 30), negatives=5, out=out,
                           chunk_size=1000, progress=False)
    qrels = read_qrels(qrels_path)
    judged_queries = read_queries(queries)
    run = retriever.search({q: judged_queries[q] for q in qrels}, k=30, progress=False)
    triples = _triples(out)
    assert triples and len(triples) == stats.triples
    per_pair: dict[tuple[str, str], list[str]] = {}
    for q, p, n in triples:
        assert qrels[q][p] > 0  # the positive is judged relevant
        assert qrels[q].get(n, 0) <= 0  # no judged-relevant document is a negative
        assert n in [d for d, _ in run[q][3:30]]  # ranks 3..29 of the retriever's own run
        per_pair.setdefault((q, p), []).append(n)
    positives = {(q, d) for q, docs in qrels.items() for d, g in docs.items() if g > 0}
    assert set(per_pair) == positives
    assert all(len(ns) == len(set(ns)) == 5 for ns in per_pair.values())
    assert stats.queries == N_QUERIES and stats.no_positives == 1 and stats.positives == len(positives)
    assert stats.triples == 5 * len(positives) and stats.short == 0 and stats.teacher_dropped == 0
    assert not out.with_name(out.name + ".work").exists()
    # "top" takes the best-ranked eligible candidates, in rank order
    mine_negatives(corpus, queries, qrels_path, retriever, window=(3, 30), negatives=5, sampling="top",
                   out=beir.parent / "top.tsv", progress=False)
    for q, p, n in _triples(beir.parent / "top.tsv"):
        eligible = [d for d, _ in run[q][3:30] if qrels[q].get(d, 0) <= 0]
        assert n in eligible[:5]


def test_grade_zero_judgements_may_be_negatives_and_short_windows_are_counted(beir):
    corpus, queries, qrels_path = _paths(beir)

    class FixedRetriever(HashRetriever):
        def search(self, queries, k=100, progress=True):  # the positive, a grade-0 doc, one other
            return Run({q: [("d0", 3.0), ("d2", 2.0), ("d7", 1.0)] for q in queries})

    stats = mine_negatives(corpus, queries, {"q0": {"d0": 1, "d2": 0}}, FixedRetriever(corpus), window=(0, 10),
                           negatives=4, out=beir.parent / "t.tsv", progress=False)
    assert _triples(beir.parent / "t.tsv") == [("q0", "d0", "d2"), ("q0", "d0", "d7")]
    assert stats.short == 1 and stats.triples == 2


def test_random_sampling_is_seeded_and_does_not_depend_on_chunking(beir):
    corpus, queries, qrels = _paths(beir)
    retriever = HashRetriever(corpus)
    outs = {}
    for label, seed, chunk in (("a", 0, 5), ("b", 0, 5), ("c", 0, 1000), ("d", 1, 5)):
        outs[label] = beir.parent / f"{label}.tsv"
        mine_negatives(corpus, queries, qrels, retriever, window=(0, 50), negatives=4, seed=seed, chunk_size=chunk,
                       out=outs[label], progress=False)
    text = {k: p.read_bytes() for k, p in outs.items()}
    assert text["a"] == text["b"] == text["c"]
    assert text["a"] != text["d"]
    # queries in sorted id order, each query's lines together
    order = [q for q, _, _ in _triples(outs["a"])]
    assert order == sorted(order)


def test_text_triples(beir):
    corpus, queries, qrels = _paths(beir)
    ids = beir.parent / "ids.tsv"
    texts = beir.parent / "texts.tsv"
    for path, as_text in ((ids, False), (texts, True)):
        mine_negatives(corpus, queries, qrels, HashRetriever(corpus), window=(0, 20), negatives=2, text=as_text,
                       out=path, progress=False)
    docs = {d.doc_id: d.full_text for d in corpus}
    qtext = read_queries(queries)
    expected = [(qtext[q], docs[p], docs[n]) for q, p, n in _triples(ids)]
    assert _triples(texts) == expected


def test_teacher_drops_false_negatives_by_margin_and_scores_align(beir):
    corpus, queries, qrels_path = _paths(beir)
    teacher, score = _teacher(beir)
    out, scores = beir.parent / "triples.tsv", beir.parent / "scores.tsv"
    retriever = HashRetriever(corpus)
    stats = mine_negatives(corpus, queries, qrels_path, retriever, window=(0, 40), negatives=6, teacher=teacher,
                           margin=0.1, out=out, scores_out=scores, chunk_size=7, progress=False, teacher_pool=0)
    triples = _triples(out)
    rows = [line.split("\t") for line in scores.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(triples) == stats.triples > 0
    for (q, p, n), (s_pos, s_neg, q2, p2, n2) in zip(triples, rows):
        assert (q, p, n) == (q2, p2, n2)
        assert float(s_pos) == pytest.approx(score[p]) and float(s_neg) == pytest.approx(score[n])
        assert score[n] <= score[p] - 0.1
    # the dropped count is every (positive, candidate) pair over the margin
    qrels = read_qrels(qrels_path)
    run = retriever.search({q: "" for q in qrels}, k=40)
    dropped = sum(1 for q, docs in qrels.items() for p, g in docs.items() if g > 0
                  for d, _ in run[q] if qrels[q].get(d, 0) <= 0 and score[d] > score[p] - 0.1)
    assert stats.teacher_dropped == dropped > 0
    # without a margin the teacher only scores: nothing is dropped
    stats = mine_negatives(corpus, queries, qrels_path, retriever, window=(0, 40), negatives=6, teacher=teacher,
                           out=beir.parent / "t2.tsv", scores_out=beir.parent / "s2.tsv", progress=False)
    assert stats.teacher_dropped == 0 and stats.short == 0


def test_the_teacher_scores_a_bounded_pool_and_negatives_come_from_it(beir):
    corpus, queries, qrels_path = _paths(beir)
    teacher, score = _teacher(beir)
    seen: list[int] = []
    original = teacher.score

    def counting(lists, progress=False):
        seen.extend(len(texts) for _, texts in lists)
        return original(lists, progress)

    teacher.score = counting
    out, scores = beir.parent / "pool.tsv", beir.parent / "pool.scores.tsv"
    retriever = HashRetriever(corpus)
    stats = mine_negatives(corpus, queries, qrels_path, retriever, window=(0, 40), negatives=3, teacher=teacher,
                           margin=0.1, out=out, scores_out=scores, progress=False, teacher_pool=2)
    qrels = read_qrels(qrels_path)
    n_pos = {q: sum(1 for g in docs.values() if g > 0) for q, docs in qrels.items()}
    assert seen and all(size <= 6 + max(n_pos.values()) for size in seen)  # positives + 2 x 3 candidates
    run = retriever.search({q: "" for q in qrels}, k=40)
    for q, p, n in _triples(out):
        assert n in {d for d, _ in run[q]} and qrels[q].get(n, 0) <= 0 and score[n] <= score[p] - 0.1
    assert stats.triples == len(_triples(out)) > 0


def test_resume_after_an_interruption_gives_the_same_bytes(beir):
    corpus, queries, qrels = _paths(beir)
    teacher, _ = _teacher(beir)
    common = dict(window=(2, 60), negatives=3, teacher=teacher, margin=0.05, chunk_size=5, progress=False)
    whole, whole_scores = beir.parent / "whole.tsv", beir.parent / "whole.scores.tsv"
    mine_negatives(corpus, queries, qrels, HashRetriever(corpus), out=whole, scores_out=whole_scores, **common)

    out, scores = beir.parent / "resumed.tsv", beir.parent / "resumed.scores.tsv"
    with pytest.raises(KeyboardInterrupt):
        mine_negatives(corpus, queries, qrels, InterruptingRetriever(corpus), out=out, scores_out=scores, **common)
    work = beir.parent / "resumed.tsv.work"
    assert sorted(p.name for p in work.iterdir()) == ["part-00000.json", "part-00000.scores.tsv", "part-00000.tsv",
                                                      "settings.json"]
    assert not out.exists() and not scores.exists()

    retriever = HashRetriever(corpus)
    stats = mine_negatives(corpus, queries, qrels, retriever, out=out, scores_out=scores, **common)
    assert retriever.calls == 4  # chunks 1-4 of 5; chunk 0 was kept
    assert stats.resumed_chunks == 1 and stats.chunks == 5 and stats.queries == N_QUERIES
    assert out.read_bytes() == whole.read_bytes()
    assert scores.read_bytes() == whole_scores.read_bytes()
    assert not work.exists()


def test_resuming_with_other_settings_is_refused_unless_forced(beir):
    corpus, queries, qrels = _paths(beir)
    out = beir.parent / "t.tsv"
    with pytest.raises(KeyboardInterrupt):
        mine_negatives(corpus, queries, qrels, InterruptingRetriever(corpus), window=(0, 30), chunk_size=5, out=out,
                       progress=False)
    with pytest.raises(InputError, match=r"other settings \(seed differ\)") as info:
        mine_negatives(corpus, queries, qrels, HashRetriever(corpus), window=(0, 30), chunk_size=5, seed=3, out=out,
                       progress=False)
    assert info.value.path == str(beir.parent / "t.tsv.work")
    stats = mine_negatives(corpus, queries, qrels, HashRetriever(corpus), window=(0, 30), chunk_size=5, seed=3,
                           out=out, force=True, progress=False)
    assert stats.resumed_chunks == 0
    fresh = beir.parent / "fresh.tsv"
    mine_negatives(corpus, queries, qrels, HashRetriever(corpus), window=(0, 30), chunk_size=5, seed=3, out=fresh,
                   progress=False)
    assert out.read_bytes() == fresh.read_bytes()


def test_bad_input_names_the_qrels_file_line_and_field(beir):
    corpus, queries, _ = _paths(beir)
    bad = beir.parent / "bad-qrels.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq99\td1\t1\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        mine_negatives(corpus, queries, bad, HashRetriever(corpus), out=beir.parent / "t.tsv", progress=False)
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), 3, "query-id")
    assert "q99" in str(info.value)
    bad.write_text("q0 0 d0 1\nq1 0 d1 1\nq1 0 nope 0\n", encoding="utf-8")  # TREC layout
    with pytest.raises(InputError) as info:
        mine_negatives(corpus, queries, bad, HashRetriever(corpus), out=beir.parent / "t.tsv", progress=False)
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), 3, "corpus-id")
    assert "'nope'" in str(info.value)
    qrels = beir / "qrels" / "train.tsv"
    with pytest.raises(InputError, match="needs a teacher"):
        mine_negatives(corpus, queries, qrels, HashRetriever(corpus), margin=0.1, out=beir.parent / "t.tsv")
    with pytest.raises(InputError, match="need a teacher"):
        mine_negatives(corpus, queries, qrels, HashRetriever(corpus), scores_out=beir.parent / "s.tsv",
                       out=beir.parent / "t.tsv")
    with pytest.raises(InputError, match="reranker spec"):
        mine_negatives(corpus, queries, qrels, HashRetriever(corpus), teacher="nonsense", out=beir.parent / "t.tsv")
    assert not (beir.parent / "t.tsv").exists()


@pytest.mark.parametrize("window", ["100:10", "x", "10"])
def test_cli_bad_rank_window_exits_2_with_one_line(beir, tmp_path, capsys, window):
    code, _, err = run_cli(capsys, "mine", "--corpus", beir, "--out", tmp_path / "t.tsv", "--rank-window", window)
    lines = [line for line in err.splitlines() if line.startswith("rankwise: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (f"rankwise: error: option '--rank-window': {window!r} is not a rank window A:B with "
                        "0 <= A < B (e.g. 10:100: ranks 10 to 99, 0-based)")


def test_cli_mines_a_beir_folder_with_a_dense_retriever(beir, tmp_path, capsys, tiny_encoder):
    out = tmp_path / "triples.tsv"
    code, stdout, err = run_cli(capsys, "mine", "--corpus", beir, "--retriever", "dense", "--encoder", tiny_encoder,
                                  "--rank-window", "5:40", "--negatives", "3", "--out", out, "--json")
    assert code == 0, err
    stats = MiningStats(**json.loads(stdout))
    assert stats.queries == N_QUERIES and stats.triples == len(_triples(out)) > 0
    assert f"{out}: {stats.triples} triples" in err
    # the index was built in the shared cache layout, keyed by the corpus
    assert len(list(index_root(Corpus(beir)).glob("dense-*-flat/manifest.json"))) == 1
    code, _, err = run_cli(capsys, "mine", "--corpus", beir / "corpus.jsonl", "--out", out)
    assert code == 2 and "--queries is needed" in err
    code, _, err = run_cli(capsys, "mine", "--corpus", beir, "--out", out, "--margin", "0.1")
    assert code == 2 and "field 'margin'" in err


def test_eval_and_mining_share_the_cached_indexes(synthetic_beir, tiny_encoder):
    """After the move to retrieval/cached.py, eval keeps its folder layout and reuses what mining built."""
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.retrieval import cached
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.hybrid import HybridRetriever
    from rankwise.retrieval.index import IndexConfig
    from rankwise.retrieval.paths import cache_root

    dataset = resolve_dataset(str(synthetic_beir), download=False, progress=False)
    corpus = dataset.corpus
    root = cache_root() / "indexes" / f"synthetic-{corpus.fingerprint[:16]}"
    assert index_root(corpus) == index_root(corpus, dataset.name) == root
    hybrid = cached_retriever(corpus, "hybrid", str(tiny_encoder), progress=False)
    assert isinstance(hybrid, HybridRetriever)
    encoder = Encoder(str(tiny_encoder))
    dense_dir = root / f"dense-{encoder.fingerprint[:16]}-flat"
    stamps = {p: p.stat().st_mtime_ns for p in (root / "bm25" / "manifest.json", dense_dir / "manifest.json")}
    assert cached.bm25_index(corpus, name=dataset.name, progress=False) == root / "bm25"
    assert cached.dense_index(corpus, encoder, IndexConfig(), name=dataset.name, progress=False) == dense_dir
    result = Experiment([f"hybrid:{tiny_encoder}"], dataset, progress=False).run().systems[f"hybrid:{tiny_encoder}"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # reused, not rebuilt
    assert len(result.run) == 10 and set(result.components) == {"bm25", "dense"}
    assert 0.0 <= result.metrics["nDCG@10"] <= 1.0
    assert {"bm25_index_s", "bm25_search_s", "dense_index_s", "dense_search_s"} <= set(result.timings)
    # the hybrid retriever mines too
    stats = mine_negatives(corpus, synthetic_beir / "queries.jsonl", synthetic_beir / "qrels" / "test.tsv", hybrid,
                           window=(0, 10), negatives=2, out=synthetic_beir.parent / "h.tsv", progress=False)
    assert stats.triples == 20
