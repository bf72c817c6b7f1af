"""rankwise stages inside PyTerrier pipelines (``pip install "rankwise[pyterrier]"``).

:func:`to_pyterrier` makes a ``pt.Transformer`` of a rankwise retriever, pipeline or reranker stage,
so that it composes with PyTerrier's own transformers (``>>``, ``%``, ``+``) and runs in
``pt.Experiment`` (Macdonald et al., CIKM 2021)::

    import ir_measures, pyterrier as pt
    from rankwise import BM25, CrossEncoderReranker
    from rankwise.retrieval.pyterrier import to_pyterrier

    bm25 = to_pyterrier(BM25(), corpus=data.corpus)                        # topics -> results
    mono = to_pyterrier(CrossEncoderReranker("./ce") % 100, corpus=data.corpus)  # results -> results
    pt.Experiment([bm25, bm25 >> mono], topics, qrels, eval_metrics=[ir_measures.nDCG @ 10])

A first stage (or a pipeline starting with one) takes PyTerrier's topics frame (``qid``, ``query``)
and returns a results frame (``qid``, ``query``, ``docno``, ``score``, ``rank``) of ``k`` documents
per query. Any other stage (a reranker at a depth, a cut-off) takes a results frame and reranks it;
documents' text comes from the frame's ``text`` column when it has one, else from ``corpus``.
Only PyTerrier's core is used, which needs no Java. The other direction, a PyTerrier transformer
as a rankwise stage, is not provided: wrap it in an object with ``search(queries, k) -> Run``.
"""

from __future__ import annotations

from typing import Any

from rankwise.retrieval.retriever import Context, Step, as_stages
from rankwise.retrieval.run import Run


def to_pyterrier(stage: Any, *, corpus: Any = None, k: int = 1000, name: str | None = None) -> Any:
    """A ``pt.Transformer`` running ``stage`` (a rankwise stage, pipeline, retriever or ``reranker % depth``);
    ``k``: documents per query of a first stage; ``corpus``: documents for stages that index or read them."""
    import pandas as pd
    import pyterrier as pt

    stages = as_stages(stage)
    resources: dict[Any, Any] = {}  # indexes and models are built once per transformer

    def run_stages(queries: dict[str, str], previous: Run | None, texts: Any) -> Run:
        ctx = Context(queries, texts, name=name, progress=False, resources=resources)
        run = previous
        for item in stages:
            run = item.apply(run, k, ctx, Step(Run()))
        assert run is not None
        return run

    class RankwiseTransformer(pt.Transformer):  # type: ignore[misc, name-defined]
        def __repr__(self) -> str:
            return f"rankwise({' >> '.join(s.label for s in stages)})"

        def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
            queries = dict(zip(inp["qid"].astype(str), inp["query"].astype(str)))
            if stages[0].first:
                run = run_stages(queries, None, corpus)
            else:
                previous = Run({q: list(zip(group["docno"].astype(str), group["score"].astype(float)))
                                for q, group in inp.groupby(inp["qid"].astype(str), sort=False)})
                texts = dict(zip(inp["docno"].astype(str), inp["text"].astype(str))) if "text" in inp else corpus
                run = run_stages(queries, previous, texts)
            rows = [(qid, queries[qid], docno, score, rank) for qid in run
                    for rank, (docno, score) in enumerate(run[qid])]
            out = pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank"])
            if "text" in inp and not stages[0].first:
                out = out.merge(inp[["qid", "docno", "text"]].astype({"qid": str, "docno": str}),
                                on=["qid", "docno"], how="left")
            return out

    return RankwiseTransformer()
