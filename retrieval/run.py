"""``Run``: what every retriever returns and every reranker takes (query id -> ranked docs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open
from rankwise.retrieval.formats import iter_lines


class Run(Mapping[str, list[tuple[str, float]]]):
    """Query id -> list of ``(doc_id, score)`` sorted by descending score.

    Reads and writes the TREC run format (``qid Q0 docid rank score tag``).
    """

    def __init__(self, results: Mapping[str, Iterable[tuple[str, float]]] | None = None, name: str = "rankwise") -> None:
        self.name = name
        self._results: dict[str, list[tuple[str, float]]] = {}
        for qid, docs in (results or {}).items():
            self[qid] = docs

    def __setitem__(self, qid: str, docs: Iterable[tuple[str, float]]) -> None:
        ranked = sorted(((str(d), float(s)) for d, s in docs), key=lambda x: -x[1])
        self._results[str(qid)] = ranked

    def __getitem__(self, qid: str) -> list[tuple[str, float]]:
        return self._results[qid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, queries={len(self)})"

    def top(self, k: int) -> Run:
        """A new run holding the first ``k`` documents of each query."""
        return Run({q: docs[:k] for q, docs in self._results.items()}, name=self.name)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}``, the shape ir-measures and pytrec_eval take."""
        return {q: dict(docs) for q, docs in self._results.items()}

    @classmethod
    def read(cls, path: str | Path) -> Run:
        """Read a TREC run file; documents are ranked by score, as trec_eval does."""
        path = Path(path)
        results: dict[str, dict[str, float]] = {}
        name = None
        for number, line in iter_lines(path):
            cols = line.split()
            if len(cols) != 6:
                raise InputError(f"expected 6 columns (qid Q0 docid rank score tag), got {len(cols)}", path=path, line=number)
            qid, _, did, _, score, tag = cols
            try:
                value = float(score)
            except ValueError:
                raise InputError(f"score {score!r} is not a number", path=path, line=number, field="score") from None
            docs = results.setdefault(qid, {})
            if did in docs:
                raise InputError(f"document {did!r} appears twice for query {qid!r}", path=path, line=number, field="docid")
            docs[did] = value
            name = name or tag
        if not results:
            raise InputError("the run is empty", path=path)
        return cls({q: d.items() for q, d in results.items()}, name=name or "rankwise")

    def write(self, path: str | Path, tag: str | None = None) -> None:
        """Write the run in TREC format, atomically."""
        tag = (tag or self.name or "rankwise").replace(" ", "_")
        with atomic_open(path) as fh:
            for qid, docs in self._results.items():
                for rank, (did, score) in enumerate(docs, start=1):
                    fh.write(f"{qid} Q0 {did} {rank} {score:.9g} {tag}\n")
