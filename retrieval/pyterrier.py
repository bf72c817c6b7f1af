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
Only PyTerrier's core is used, which needs no Java.

The other direction, :func:`from_pyterrier`, makes a rankwise stage of any ``pt.Transformer``: a
retriever (topics -> results) as a first stage, or with ``reranks=True`` a reranker (results ->
results) that takes the run before it, so PyTerrier's retrievers and rerankers run in a rankwise
:class:`~rankwise.retrieval.pipeline.Pipeline` and :class:`~rankwise.eval.experiment.Experiment`::

    pt_bm25 = from_pyterrier(pt.terrier.Retriever(index, wmodel="BM25"), name="terrier-bm25")
    Experiment([pt_bm25, pt_bm25 >> CrossEncoderReranker("./ce") % 100], "scifact").run()
"""

from __future__ import annotations

from typing import Any

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import lookup_documents
from rankwise.retrieval.retriever import Context, Stage, Step, as_stages
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


class PyTerrierStage(Stage):
    """A ``pt.Transformer`` as a rankwise stage (see :func:`from_pyterrier`); equal only to itself."""

    kind = "pyterrier"

    def __init__(self, transformer: Any, *, reranks: bool = False, name: str | None = None) -> None:
        if not callable(getattr(transformer, "transform", None)):
            raise InputError(f"{type(transformer).__name__} is not a PyTerrier transformer (it has no transform())",
                             field="transformer")
        self.transformer, self.first, self.name = transformer, not reranks, name
        self.reads_corpus = reranks

    @property
    def label(self) -> str:
        return self.name or repr(self.transformer)

    def describe(self) -> dict[str, Any]:
        return {"stage": self.kind, "transformer": self.label, "reranks": not self.first}

    def apply(self, previous: Run | None, k: int, ctx: Context, record: Step) -> Run:
        import time

        import pandas as pd

        qids = list(ctx.queries)
        if previous is None:
            frame = pd.DataFrame({"qid": qids, "query": [ctx.queries[q] for q in qids]})
        else:
            rows = [(q, ctx.queries[q], d, s, r) for q in previous for r, (d, s) in enumerate(previous[q])]
            frame = pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank"])
            texts = lookup_documents(ctx.need_corpus(self), set(frame["docno"]))
            frame["text"] = [texts[d].full_text for d in frame["docno"]]
        t = time.perf_counter()
        out = self.transformer.transform(frame)
        record.timings[f"{self.kind}_{'search' if self.first else 'rerank'}_s"] = time.perf_counter() - t
        missing = [c for c in ("qid", "docno", "score") if c not in out.columns]
        if missing:
            raise InputError(f"{self.label} returned no {missing[0]!r} column (columns: {', '.join(map(str, out.columns))})",
                             field="transformer")
        run = Run({q: list(zip(g["docno"].astype(str), g["score"].astype(float)))
                   for q, g in out.groupby(out["qid"].astype(str), sort=False)}, name=self.label)
        return run.top(k) if self.first else run


def from_pyterrier(transformer: Any, *, reranks: bool = False, name: str | None = None) -> PyTerrierStage:
    """A rankwise stage running a PyTerrier ``transformer``: a first stage taking the queries (PyTerrier's
    topics frame ``qid``, ``query``) and returning its results cut to the pipeline's ``k``; with
    ``reranks=True`` a stage taking the run before it as a results frame (``qid``, ``query``, ``docno``,
    ``score``, ``rank``, and ``text`` from the corpus) and returning the transformer's scores. ``name``:
    its label in pipelines and experiments (default: the transformer's ``repr``)."""
    return PyTerrierStage(transformer, reranks=reranks, name=name)
