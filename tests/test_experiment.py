"""Pipelines as objects (``BM25() >> reranker % 100``), and one Experiment behind the evaluation commands."""

from __future__ import annotations

import json

import pytest

from rankwise.eval.experiment import Experiment, read_query_seconds
from rankwise.eval.systems import parse_system
from rankwise.rerank.spec import RerankerSpec, parse_spec
from rankwise.rerank.stage import Rerank
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.pipeline import BM25, Cutoff, Dense, Hybrid, Pipeline
from tests._helpers import run_cli


def test_operators_build_pipelines_that_compare_by_their_stages():
    spec = parse_spec("cross-encoder:./ce,batch_size=8")
    pipe = BM25() >> spec % 50
    assert isinstance(pipe, Pipeline) and pipe.stages == (BM25(), Rerank(spec, 50))
    assert pipe == parse_system("bm25>>cross-encoder:./ce,batch_size=8", depth=50)
    assert pipe != parse_system("bm25>>cross-encoder:./ce,batch_size=8", depth=100)
    assert hash(spec) == hash(parse_spec("cross-encoder:./ce,batch_size=8"))
    assert (pipe % 10).stages[-1] == Cutoff(10) and pipe.name == "bm25+cross-encoder"
    assert parse_system("hybrid:./enc").stages == (Hybrid(BM25(), Dense("./enc")),)
    assert parse_system("dense").name == "dense"
    with pytest.raises(InputError, match="can only be a pipeline's first stage"):
        BM25() >> Dense()
    with pytest.raises(InputError, match="starts with a retriever"):
        Pipeline([Rerank(spec)])
    with pytest.raises(InputError, match="positive integer"):
        BM25() % 0


def test_python_pipeline_and_experiment_and_cli_agree(synthetic_beir, tiny_encoder, tiny_cross_encoder):
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.rerank.cross_encoder import CrossEncoderReranker

    dataset = resolve_dataset(str(synthetic_beir), download=False, progress=False)
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    bm25 = BM25()
    pipe = bm25 >> reranker % 5
    run = pipe.search(dataset.queries(), k=20, corpus=dataset.corpus, progress=False)
    assert len(run) == 10 and all(len(docs) == 20 for docs in run.values())

    searches = []
    from rankwise.retrieval.bm25 import BM25Retriever

    original = BM25Retriever.search
    BM25Retriever.search = lambda self, *a, **kw: searches.append(1) or original(self, *a, **kw)
    try:
        result = Experiment([bm25, pipe, Dense(str(tiny_encoder))], dataset, ["nDCG@10", "R@10"], k=20,
                            baseline="bm25", progress=False).run()
    finally:
        BM25Retriever.search = original
    assert searches == [1]  # the shared prefix ran once
    assert list(result.table.index) == ["bm25", "bm25+cross-encoder", "dense"]
    assert list(result.table.columns) == ["nDCG@10", "R@10"]
    assert result.systems["bm25+cross-encoder"].run.as_dict() == run.as_dict()
    assert result.systems["bm25+cross-encoder"].reused == ["bm25"]
    assert set(result.per_query["system"]) == set(result.systems) and len(result.per_query) == 3 * 2 * 10
    timings = result.systems["bm25+cross-encoder"].timings
    assert set(timings) == {"bm25_index_s", "bm25_search_s", "rerank_s"}
    assert result.comparison.attrs["baseline"] == "bm25"
    # the same mean, summed in another order (the comparison averages the per-query values itself)
    assert result.comparison.loc["dense", ("nDCG@10", "mean")] == pytest.approx(result.table.loc["dense", "nDCG@10"],
                                                                                abs=1e-12)
    with pytest.raises(InputError, match="baseline 'x' is not one of the systems"):
        Experiment([bm25], dataset, baseline="x")
    with pytest.raises(InputError, match="unknown correction"):
        Experiment([bm25], dataset, correction="sidak")


def test_reranker_spec_is_parsed_once_per_run(synthetic_beir, tiny_cross_encoder, capsys, monkeypatch, tmp_path):
    import rankwise.rerank.spec as spec_module

    parses, loads = [], []
    real_parse, real_load = spec_module.parse_spec, spec_module.load_reranker
    monkeypatch.setattr(spec_module, "parse_spec", lambda text: parses.append(text) or real_parse(text))
    monkeypatch.setattr(spec_module, "load_reranker", lambda spec, **kw: loads.append(spec) or real_load(spec, **kw))
    ce = f"cross-encoder:{tiny_cross_encoder},batch_size=8"
    code, out, err = run_cli(capsys, "beir", synthetic_beir, "--reranker", ce, "--depth", "5", "--json",
                               "--out", tmp_path / "one")
    assert code == 0, err
    assert parses == [ce] and len(loads) == 1 and isinstance(loads[0], RerankerSpec)
    parses.clear(), loads.clear()
    code, out, err = run_cli(capsys, "beir", synthetic_beir, "--systems", f"bm25,bm25>>{ce}", "--depth", "5",
                               "--format", "json", "--out", tmp_path / "two")
    assert code == 0, err
    assert parses == [ce] and len(loads) == 1
    for folder, name in (("one", "bm25+cross-encoder"), ("two", f"bm25>>{ce}")):
        document = json.loads((tmp_path / folder / "results.json").read_text())
        [entry] = document["experiments"]
        assert entry["systems"][name]["stats"]["rerank"]["lists"] == 10
        assert entry["systems"][name]["pipeline"][1]["reranker"] == ce
        assert read_query_seconds(tmp_path / folder / "results.json")[name] > 0


def test_read_query_seconds_reads_the_older_layouts(tmp_path):
    old_systems = {"datasets": {"d": {"systems": {"bm25>>cross-encoder:./ce": {
        "timings": {"bm25_index_s": 9.0, "bm25_search_s": 1.0, "rerank_s": 2.0}}}}}}
    old_single = {"settings": {"retriever": "hybrid", "fusion": "rrf"},
                  "datasets": {"d": {"timings": {"bm25_search_s": 1.0, "dense_search_s": 0.5}}}}
    for doc, expected in ((old_systems, {"bm25>>cross-encoder:./ce": 3.0, "bm25_cross-encoder_._ce": 3.0}),
                          (old_single, {"hybrid-rrf": 1.5})):
        (tmp_path / "r.json").write_text(json.dumps(doc))
        assert read_query_seconds(tmp_path / "r.json") == expected
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(InputError, match="not a results.json"):
        read_query_seconds(tmp_path / "r.json")
