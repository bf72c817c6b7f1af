"""Long documents as overlapping passages, and passage scores back to one document score.

A document's text is cut into windows of ``passage_tokens`` whitespace tokens that start every
``stride`` tokens (the last window is moved back so that it ends at the last token, so every token
is in at least one window and no window is shorter than needed); the title, when there is one, is
repeated before each window. A document no longer than one window is one passage; an empty text is
one passage holding the title (or the empty string). Word windows with a stride follow Dai & Callan
(2019, "Deeper Text Understanding for IR with Contextual Neural Language Modeling": 150 words,
stride 75, FirstP / MaxP / SumP); ``kmaxavg:K`` is the mean of the K best passage scores.

This is the retrieval layer's module, so dense indexing (:mod:`rankwise.retrieval.passage_index`) and every
reranker (:mod:`rankwise.rerank.passages`) split the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rankwise.retrieval.errors import InputError

AGGREGATIONS = ("firstp", "maxp", "sump", "kmaxavg:K")
PASSAGE_SEP = "#p"  # passage ids are DOCID#pN


@dataclass(frozen=True)
class Splitter:
    """Cut texts into windows of ``passage_tokens`` whitespace tokens every ``stride`` tokens."""

    passage_tokens: int = 128
    stride: int | None = None  # None: passage_tokens (no overlap)

    def __post_init__(self) -> None:
        if self.passage_tokens < 1:
            raise InputError(f"passages must be at least 1 token, got {self.passage_tokens}", field="passages")
        if self.stride is not None and not 1 <= self.stride <= self.passage_tokens:
            raise InputError(f"stride must be within 1..{self.passage_tokens} (the passage length), got {self.stride}",
                             field="stride")

    @property
    def step(self) -> int:
        return self.stride or self.passage_tokens

    def spans(self, n_tokens: int) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` token windows covering ``range(n_tokens)``; ``[(0, 0)]`` for no tokens."""
        size = self.passage_tokens
        if n_tokens <= size:
            return [(0, n_tokens)]
        starts = list(range(0, n_tokens - size, self.step))
        starts.append(n_tokens - size)  # the last window ends at the last token
        return [(s, s + size) for s in dict.fromkeys(starts)]

    def split(self, text: str, title: str = "") -> list[str]:
        """The passages of one document, each starting with ``title`` when there is one."""
        tokens = text.split()
        head = title.strip()
        out = []
        for start, end in self.spans(len(tokens)):
            body = " ".join(tokens[start:end])
            out.append(f"{head} {body}".strip() if head else body)
        return out

    def needs_split(self, text: str) -> bool:
        """Whether ``text`` is longer than one passage."""
        return len(text.split()) > self.passage_tokens


def parse_aggregation(agg: str) -> tuple[str, int]:
    """``firstp`` / ``maxp`` / ``sump`` / ``kmaxavg:K`` -> (name, K); anything else is an :class:`InputError`."""
    name, _, k = agg.strip().lower().partition(":")
    if name in ("firstp", "maxp", "sump") and not k:
        return name, 0
    if name == "kmaxavg":
        try:
            value = int(k)
        except ValueError:
            value = 0
        if value >= 1:
            return name, value
        raise InputError(f"agg={agg!r}: kmaxavg needs a K of at least 1 (kmaxavg:3)", field="agg")
    raise InputError(f"agg={agg!r} is not one of {', '.join(AGGREGATIONS)}", field="agg")


def aggregate(scores: Sequence[float], agg: str = "maxp") -> float:
    """One document score from its passage scores (in document order); see the module docstring."""
    name, k = parse_aggregation(agg)
    if not scores:
        raise InputError("a document has no passage scores to aggregate", field="agg")
    if name == "firstp":
        return float(scores[0])
    if name == "maxp":
        return float(max(scores))
    if name == "sump":
        return float(sum(scores))
    best = sorted(scores, reverse=True)[:k]
    return float(sum(best) / len(best))


def passage_id(doc_id: str, number: int) -> str:
    """The id of passage ``number`` of ``doc_id``."""
    return f"{doc_id}{PASSAGE_SEP}{number}"


def document_id(pid: str) -> str:
    """The document id of a passage id made by :func:`passage_id`."""
    return pid.rsplit(PASSAGE_SEP, 1)[0]
