"""An index built by the int8 ONNX encoder is searched and mined with that encoder.

``rankwise search``, ``rankwise mine --index`` and :class:`DenseRetriever` take the backend from the
index manifest; their results must equal what the int8 encoder gives on the index by hand.
"""

from __future__ import annotations

import functools

from rankwise.cli import main
from rankwise.retrieval.backend.value import ONNX_INT8
from rankwise.retrieval.run import Run
from tests._helpers import run_cli

_rankwise = functools.partial(run_cli, check=True)


def _by_hand(index_dir, tiny_encoder, queries: dict[str, str], k: int) -> dict[str, list[str]]:
    """The top ``k`` of each query: the int8 encoder's query vectors against the index, no retriever code."""
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.index import DenseIndex

    encoder = Encoder(str(tiny_encoder), backend="onnx-int8", batch_size=64)
    index = DenseIndex.load(index_dir)
    qids = list(queries)
    _, positions = index.search(encoder.encode_queries([queries[q] for q in qids]), k)
    return {q: [index.doc_ids[p] for p in row if p >= 0] for q, row in zip(qids, positions)}


def test_an_int8_index_is_searched_and_mined_with_the_int8_encoder(tmp_path, capsys, synthetic_beir, tiny_encoder):
    from rankwise.retrieval.dense import DenseRetriever
    from rankwise.retrieval.formats import read_qrels, read_queries

    idx = tmp_path / "int8-index"
    _rankwise(capsys, "index", synthetic_beir, "--out", idx, "--encoder", tiny_encoder, "--backend", "onnx-int8")
    queries = read_queries(synthetic_beir)
    expected = _by_hand(idx, tiny_encoder, queries, 20)

    run_file = tmp_path / "run.trec"
    _rankwise(capsys, "search", idx, "--queries", synthetic_beir, "--out", run_file, "-k", "20")
    got = Run.read(run_file)
    assert {q: [d for d, _ in got[q]] for q in queries} == expected

    retriever = DenseRetriever(idx)
    assert retriever.encoder.backend == ONNX_INT8
    api = retriever.search(queries, k=20, progress=False)
    assert {q: [d for d, _ in api[q]] for q in queries} == expected

    triples = tmp_path / "triples.tsv"
    _rankwise(capsys, "mine", "--corpus", synthetic_beir, "--qrels", synthetic_beir / "qrels" / "test.tsv",
              "--index", idx, "--out", triples, "--rank-window", "0:20", "--negatives", "3", "--sampling", "top")
    qrels = read_qrels(synthetic_beir / "qrels" / "test.tsv")
    want = []
    for q in queries:
        relevant = {d for d, g in qrels[q].items() if g > 0}
        negatives = [d for d in expected[q] if d not in relevant][:3]
        want += [(q, p, n) for p in sorted(relevant) for n in negatives]
    lines = [tuple(line.split("\t")) for line in triples.read_text(encoding="utf-8").splitlines()]
    assert sorted(lines) == sorted(want) and len(want) == 30


def test_mining_refuses_an_index_of_another_corpus(tmp_path, capsys, synthetic_beir, tiny_encoder):
    from tests.conftest import write_beir

    other = write_beir(tmp_path / "other", [{"_id": "x", "text": "some other text"}], [{"_id": "q", "text": "t"}],
                       [("q", "x", 1)])
    idx = tmp_path / "idx"
    _rankwise(capsys, "index", other, "--out", idx, "--encoder", tiny_encoder)
    try:
        main([str(a) for a in ("mine", "--corpus", synthetic_beir, "--qrels", synthetic_beir / "qrels" / "test.tsv",
                               "--index", idx, "--out", tmp_path / "t.tsv")])
    except SystemExit as exit_info:
        assert exit_info.code == 2
    err = capsys.readouterr().err
    assert "idx/manifest.json" in err and "source.sha256" in err and "another corpus" in err
