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
