"""rankwise stages inside PyTerrier: the same pipeline gives the same per-query nDCG@10 both ways."""

from __future__ import annotations

import pytest

pt = pytest.importorskip("pyterrier")


def test_rankwise_pipeline_in_pyterrier_matches_the_experiment(synthetic_beir, tiny_cross_encoder):
    import pandas as pd
    from ir_measures import nDCG

    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.retrieval.pipeline import BM25
    from rankwise.retrieval.pyterrier import to_pyterrier

    dataset = resolve_dataset(str(synthetic_beir), download=False, progress=False)
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    ours = Experiment([BM25() >> reranker % 10], dataset, ["nDCG@10"], k=50, progress=False).run()

    bm25 = to_pyterrier(BM25(), corpus=dataset.corpus, k=50)
    mono = to_pyterrier(reranker % 10, corpus=dataset.corpus)
    assert isinstance(bm25 >> mono, pt.Transformer)
    topics = pd.DataFrame(list(dataset.queries().items()), columns=["qid", "query"])
    qrels = pd.DataFrame([(q, d, g) for q, docs in dataset.qrels().items() for d, g in docs.items()],
                         columns=["qid", "docno", "label"])
    theirs = pt.Experiment([bm25 >> mono], topics, qrels, eval_metrics=[nDCG @ 10], names=["p"], perquery=True)
    per_query = ours.per_query.set_index("query_id")["value"].to_dict()
    got = dict(zip(theirs["qid"], theirs["value"]))
    assert set(got) == set(per_query)
    assert got == pytest.approx(per_query, abs=1e-9)
    assert any(v > 0 for v in got.values())


def test_a_pyterrier_retriever_and_reranker_run_as_rankwise_stages(synthetic_beir):
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.eval.experiment import Experiment
    from rankwise.retrieval.formats import lookup_documents
    from rankwise.retrieval.pipeline import BM25
    from rankwise.retrieval.pyterrier import from_pyterrier, to_pyterrier

    dataset = resolve_dataset(str(synthetic_beir), download=False, progress=False)
    # a PyTerrier retriever (here rankwise's BM25 made a pt.Transformer) back as a rankwise first stage
    pt_bm25 = from_pyterrier(to_pyterrier(BM25(), corpus=dataset.corpus, k=50), name="pt-bm25")
    # a PyTerrier reranker of PyTerrier's own: the longer the document, the higher
    by_length = from_pyterrier(pt.apply.doc_score(lambda row: float(len(row["text"]))), reranks=True, name="length")
    result = Experiment([BM25(), pt_bm25, pt_bm25 % 5 >> by_length], dataset, ["nDCG@10"], k=20,
                        names=["bm25", "pt-bm25", "length"], progress=False).run()
    ours, theirs, reranked = (result.systems[n].run for n in ("bm25", "pt-bm25", "length"))
    assert list(theirs) == list(ours)
    for q in ours:  # the same documents and scores, cut to the experiment's k
        assert [d for d, _ in theirs[q]] == [d for d, _ in ours[q]] and len(theirs[q]) <= 20
        assert [s for _, s in theirs[q]] == pytest.approx([s for _, s in ours[q]])
        texts = lookup_documents(dataset.corpus, [d for d, _ in ours[q]])
        top5 = [d for d, _ in ours[q][:5]]
        assert [d for d, _ in reranked[q]] == sorted(top5, key=lambda d: -len(texts[d].full_text))
    assert "pt-bm25" in result.systems["length"].reused  # the PyTerrier retriever ran once
    assert result.systems["pt-bm25"].metrics == result.systems["bm25"].metrics


def test_from_pyterrier_refuses_what_is_not_a_transformer_and_names_a_missing_column():
    from rankwise.retrieval.errors import InputError
    from rankwise.retrieval.pipeline import Pipeline
    from rankwise.retrieval.pyterrier import from_pyterrier

    with pytest.raises(InputError, match="not a PyTerrier transformer"):
        from_pyterrier(object())
    no_score = from_pyterrier(pt.apply.generic(lambda df: df.assign(docno="d1")[["qid", "docno"]]), name="bad")
    with pytest.raises(InputError, match="bad returned no 'score' column"):
        Pipeline.of(no_score).search({"q1": "a query"}, k=5)
