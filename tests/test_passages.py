"""Long documents: passage splitting, aggregation, the passage reranker wrapper and IDCM."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rankwise.rerank.base import Reranker
from rankwise.rerank.idcm import IDCMReranker, bm25_passage_scores, top_passages
from rankwise.rerank.passages import PassageReranker
from rankwise.rerank.spec import load_reranker, parse_spec
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Document
from rankwise.retrieval.passages import Splitter, aggregate, document_id, passage_id


@pytest.mark.parametrize("n,size,stride", [(10, 4, 2), (11, 4, 3), (7, 3, 3), (100, 16, 5), (5, 5, 1)])
def test_windows_cover_every_token_with_the_overlap(n, size, stride):
    spans = Splitter(size, stride).spans(n)
    covered = [t for s, e in spans for t in range(s, e)]
    assert set(covered) == set(range(n))
    assert all(e - s == size for s, e in spans)
    starts = [s for s, _ in spans]
    assert starts[0] == 0 and spans[-1][1] == n
    # consecutive windows start `stride` apart, except the last, moved back to end at the last token
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))
    assert len(starts) == 1 or 0 < starts[-1] - starts[-2] <= stride
    assert len(starts) == (1 if n <= size else -(-(n - size) // stride) + 1)


def test_split_text_by_hand():
    words = " ".join(f"w{i}" for i in range(7))
    assert Splitter(4, 2).split(words) == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w3 w4 w5 w6"]
    assert Splitter(3).split(words, title="T") == ["T w0 w1 w2", "T w3 w4 w5", "T w4 w5 w6"]


def test_short_and_empty_documents():
    assert Splitter(128, 64).split("a short one", title="Title") == ["Title a short one"]
    assert Splitter(128, 64).split("", title="Only a title") == ["Only a title"]
    assert Splitter(128, 64).split("   ") == [""]
    assert not Splitter(3).needs_split("a b c") and Splitter(3).needs_split("a b c d")


def test_bad_splitter_settings():
    with pytest.raises(InputError, match="stride"):
        Splitter(4, 5)
    with pytest.raises(InputError, match="passages"):
        Splitter(0)


def test_aggregations_by_hand():
    scores = [1.0, 4.0, -2.0, 3.0]
    assert aggregate(scores, "firstp") == 1.0
    assert aggregate(scores, "maxp") == 4.0
    assert aggregate(scores, "sump") == 6.0
    assert aggregate(scores, "kmaxavg:2") == 3.5
    assert aggregate(scores, "kmaxavg:10") == 1.5  # K above the passage count: all of them
    for bad in ("maxp:2", "kmaxavg", "kmaxavg:0", "mean"):
        with pytest.raises(InputError):
            aggregate(scores, bad)


def test_passage_ids_round_trip():
    assert document_id(passage_id("doc#1", 3)) == "doc#1"


class WordCount(Reranker):
    """Scores a text by how often it holds the query word; records every text it was asked about."""

    name = "count"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def score(self, lists: Sequence[tuple[str, Sequence[str]]], progress: bool = False) -> list[list[float]]:
        self.stats.lists += len(lists)
        out = []
        for query, docs in lists:
            self.seen.extend(docs)
            self.stats.passages += len(docs)
            out.append([float(d.split().count(query)) for d in docs])
        return out


def test_passage_reranker_aggregates_and_repeats_titles():
    docs = [Document("a", "T", "x q q q y y q x"), Document("b", "", "q x x x")]
    inner = WordCount()
    wrapped = PassageReranker(inner, passages=4, agg="maxp")
    assert wrapped.score_documents([("q", docs)]) == [[3.0, 1.0]]
    assert inner.seen == ["T x q q q", "T y y q x", "q x x x"]
    assert PassageReranker(WordCount(), passages=4, agg="sump").score_documents([("q", docs)]) == [[4.0, 1.0]]
    assert PassageReranker(WordCount(), passages=4, agg="kmaxavg:2").score_documents([("q", docs)]) == [[2.0, 1.0]]
    firstp = WordCount()
    assert PassageReranker(firstp, passages=2, agg="firstp").score_documents([("q", docs)]) == [[1.0, 1.0]]
    assert firstp.seen == ["T x q", "q x"]  # FirstP scores one passage per document
    assert wrapped.stats.extra["passages_scored"] == 3 and wrapped.stats.extra["documents_split"] == 1


def test_passage_spec_options():
    assert parse_spec("cross-encoder:m,passages=128,stride=64,agg=kmaxavg:3").options == {
        "passages": 128, "stride": 64, "agg": "kmaxavg:3"}
    with pytest.raises(InputError, match="need passages"):
        parse_spec("cross-encoder:m,agg=maxp")
    with pytest.raises(InputError):
        parse_spec("idcm:bm25>>m,agg=maxp")
    assert parse_spec("idcm:bm25>>cross-encoder:m,select=4").model == "bm25>>cross-encoder:m"
    # listwise has a stride of its own (the window's): the passage stride is passage_stride there
    assert parse_spec("listwise:m,stride=10").options == {"stride": 10}
    assert parse_spec("listwise:m,stride=10,passages=64,passage_stride=32").options["passage_stride"] == 32
    with pytest.raises(InputError, match="need passages"):
        parse_spec("listwise:m,passage_stride=32")


def test_bm25_selector_prefers_the_matching_passage():
    scores = bm25_passage_scores("vaccine virus", [["heart blood", "the vaccine virus trial"], ["virus"]])
    assert scores[0][0] == 0.0 and scores[0][1] > scores[1][0] > 0.0
    assert top_passages([0.1, 0.9, 0.9, 0.5], 2) == [1, 2]
    assert top_passages([3.0], 4) == [0]


def test_idcm_never_scores_more_than_select(tiny_cross_encoder):
    words = "protein cell gene wing airflow pressure heart blood shock wave vaccine virus".split()
    docs = [Document(f"d{i}", "title", " ".join(words[(i + j) % len(words)] for j in range(60))) for i in range(5)]
    docs.append(Document("short", "", "vaccine virus"))
    reranker = load_reranker(f"idcm:bm25>>{tiny_cross_encoder},select=2,passages=8,stride=4")
    assert isinstance(reranker, IDCMReranker)
    scores = reranker.score_documents([("vaccine virus", docs), ("heart", docs[:2])])
    assert len(scores[0]) == 6 and len(scores[1]) == 2
    assert reranker.max_scored == 2
    extra = reranker.stats.extra
    assert extra["documents"] == 8 and extra["passages_scored"] == 2 * 7 + 1
    assert extra["passages"] > extra["passages_scored"]
    # select >= every passage count: IDCM is MaxP with the same scorer
    full = load_reranker(f"idcm:bm25>>{tiny_cross_encoder},select=100,passages=8,stride=4")
    maxp = load_reranker(f"cross-encoder:{tiny_cross_encoder},passages=8,stride=4,agg=maxp")
    assert full.score_documents([("heart", docs)])[0] == pytest.approx(maxp.score_documents([("heart", docs)])[0],
                                                                       abs=1e-5)


def test_scifact_long_generator_is_deterministic(tmp_path, synthetic_beir):
    import importlib.util
    from pathlib import Path

    from rankwise.retrieval.formats import Corpus, read_qrels

    path = Path(__file__).resolve().parent.parent / "bench" / "make_scifact_long.py"
    spec = importlib.util.spec_from_file_location("make_scifact_long", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a = module.make_long(synthetic_beir, tmp_path / "a", seed=3, queries=5, docs=40)
    module.make_long(synthetic_beir, tmp_path / "b", seed=3, queries=5, docs=40)
    module.make_long(synthetic_beir, tmp_path / "c", seed=4, queries=5, docs=40)
    for name in ("corpus.jsonl", "positions.tsv", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "corpus.jsonl").read_bytes() != (tmp_path / "c" / "corpus.jsonl").read_bytes()
    assert a["documents"] == 40 and a["queries"] == 5
    original = {d.doc_id: d for d in Corpus(synthetic_beir)}
    qrels = read_qrels(tmp_path / "a" / "qrels" / "test.tsv")
    assert qrels == {q: v for q, v in read_qrels(synthetic_beir / "qrels" / "test.tsv").items() if q in qrels}
    rows = [line.split("\t") for line in (tmp_path / "a" / "positions.tsv").read_text().splitlines()[1:]]
    long_docs = {d.doc_id: d for d in Corpus(tmp_path / "a")}
    assert {d for q in qrels for d in qrels[q]} <= set(long_docs)
    for doc_id, position, count, fillers in rows:
        parts = [original[doc_id]] + [original[f] for f in fillers.split(",")]
        assert int(count) == 8 and len(parts) == 8 and doc_id not in fillers.split(",")
        order = parts[1:]
        order.insert(int(position), parts[0])
        assert long_docs[doc_id].text == " ".join(module.abstract(p.title, p.text) for p in order)
        assert long_docs[doc_id].title == ""


def test_position_table_by_hand(tmp_path):
    import math

    from rankwise.eval.position_bias import position_table, read_positions, wide
    from rankwise.retrieval.run import Run

    (tmp_path / "positions.tsv").write_text("doc-id\tposition\tabstracts\tfillers\n"
                                            "a\t0\t8\tx\nb\t7\t8\ty\nc\t3\t8\tz\n", encoding="utf-8")
    positions = read_positions(tmp_path / "positions.tsv")
    assert positions == {"a": (0, 8), "b": (7, 8), "c": (3, 8)}
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = Run({"q1": [("a", 3.0), ("x", 2.0)], "q2": [("x", 5.0), ("c", 4.0)]})  # b never retrieved
    table = position_table({"s": run}, qrels, positions, buckets=8)
    rows = {r.bucket: r for r in table.itertuples()}
    assert rows[1].pairs == 1 and rows[1]._4 == 1.0 and rows[1].MRR == 1.0 and rows[1].median_rank == 1
    assert rows[4]._4 == pytest.approx(1 / math.log2(3)) and rows[4].MRR == 0.5
    assert rows[8]._4 == 0.0 and rows[8].found == 0.0 and math.isnan(rows[8].median_rank)
    assert rows[0].pairs == 3 and rows[0].MRR == pytest.approx(0.5)
    assert list(wide(table).columns) == ["all"] + [f"{b}/8" for b in range(1, 9)]
    (tmp_path / "bad.tsv").write_text("a\t9\t8\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1"):
        read_positions(tmp_path / "bad.tsv")


def test_dense_passage_index_returns_documents(tmp_path, tiny_encoder):
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.passage_index import PassageDenseRetriever, max_over_passages
    from rankwise.retrieval.run import Run
    from tests.conftest import write_beir

    assert max_over_passages(Run({"q": [("a#p1", 3.0), ("b#p0", 2.0), ("a#p0", 1.0)]}), 5)["q"] == [
        ("a", 3.0), ("b", 2.0)]
    words = "protein cell gene wing airflow pressure heart blood shock wave vaccine virus".split()
    docs = [{"_id": f"d{i}", "title": "t", "text": " ".join(words[(i * 5 + j) % 12] for j in range(30))}
            for i in range(6)]
    folder = write_beir(tmp_path / "c", docs, [{"_id": "q", "text": "vaccine"}], [("q", "d0", 1)])
    retriever = PassageDenseRetriever(Corpus(folder), Encoder(str(tiny_encoder)), Splitter(8, 4), progress=False)
    assert retriever.counts == {"documents": 6, "documents_split": 6, "passages": 6 * 7}
    run = retriever.search({"q": "vaccine virus"}, k=4, progress=False)
    assert len(run["q"]) == 4 and len({d for d, _ in run["q"]}) == 4 and all("#" not in d for d, _ in run["q"])


def test_position_bias_command(tmp_path, capsys, synthetic_beir, tiny_encoder, tiny_cross_encoder):
    import importlib.util
    import json
    from pathlib import Path

    from rankwise.cli import main

    path = Path(__file__).resolve().parent.parent / "bench" / "make_scifact_long.py"
    spec = importlib.util.spec_from_file_location("make_scifact_long", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path / "long"
    module.make_long(synthetic_beir, folder, seed=0, queries=4, docs=30)
    enc, ce = str(tiny_encoder), str(tiny_cross_encoder)
    systems = (f"dense:{enc},dense-passages:{enc},dense:{enc}>>cross-encoder:{ce},passages=16,agg=firstp,"
               f"dense:{enc}>>idcm:bm25>>{ce},select=2,passages=16")
    plot = tmp_path / "bias.png"

    def run(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code or 0
        return code, *capsys.readouterr()

    code, out, err = run("position-bias", folder, "--systems", systems, "--depth", 3, "-k", 10, "--passages", 16,
                         "--format", "json", "--plot", plot)
    assert code == 0, err
    result = json.loads(out)
    names = list(result["systems"])
    assert len(names) == 4 and plot.stat().st_size > 0
    idcm = result["systems"][names[3]]
    assert 0 < idcm["passages_per_doc"] <= 2
    assert result["systems"][names[2]]["passages_per_doc"] == 1.0  # FirstP: one passage per document
    assert {row["bucket"] for row in result["table"]} <= set(range(9))
    (folder / "positions.tsv").write_text("doc-id\tposition\tabstracts\nd1\tx\t8\n", encoding="utf-8")
    code, out, err = run("position-bias", folder, "--systems", f"dense:{enc}")
    assert code == 2 and "positions.tsv" in err and "line 2" in err
