"""The ``Retriever`` protocol, beside :class:`~rankwise.retrieval.run.Run`, and the ``>>`` / ``%`` operators.

Every first stage (BM25, dense, hybrid, a :class:`~rankwise.retrieval.pipeline.Pipeline`) offers
``search(queries, k) -> Run``. Classes that mix in :class:`Composable` compose into pipelines the
way PyTerrier's transformers do (Macdonald et al., CIKM 2021): ``retriever >> reranker % 100``
reranks the retriever's top 100; ``retriever % 10`` keeps its top 10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rankwise.retrieval.run import Run

if TYPE_CHECKING:
    from rankwise.retrieval.pipeline import Pipeline


@runtime_checkable
class Retriever(Protocol):
    """What every first-stage retriever offers."""

    def search(self, queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run: ...


class Composable:
    """``self >> other`` builds a :class:`~rankwise.retrieval.pipeline.Pipeline`; ``self % k`` cuts it to ``k``."""

    def __rshift__(self, other: Any) -> Pipeline:
        from rankwise.retrieval.pipeline import Pipeline

        return Pipeline.of(self, other)

    def __mod__(self, k: int) -> Pipeline:
        from rankwise.retrieval.pipeline import Cutoff, Pipeline

        return Pipeline.of(self, Cutoff(k))
