"""MS MARCO and TREC Deep Learning: a local folder in MS MARCO layout, and each collection's measures.

A folder in MS MARCO layout holds ``collection.tsv`` (``pid \\t passage``, or ``.tsv.gz``), and per
split ``queries.<split>.tsv`` / ``qrels.<split>.tsv``, or just ``queries.tsv`` and ``qrels.tsv``
(served as the ``test`` split). Qrels are TREC style (``qid 0 pid grade``) or three columns.

Official measures (Nguyen et al., 2016; Craswell et al., TREC 2019 and 2020 Deep Learning track
overviews): MS MARCO dev is scored by RR@10 (MRR@10); TREC DL by nDCG@10 over the graded labels
(0-3), and recall and AP at 1000 counting only grades >= 2 as relevant, as the track's
``trec_eval -l 2`` does: ``R(rel=2)@1000``, ``AP(rel=2)@1000``. A local folder whose qrels hold
grades above 1 gets the TREC DL measures, otherwise MS MARCO's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rankwise.eval.datasets import FOLDER_LAYOUTS, BeirDataset
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import read_qrels, read_queries

MSMARCO_DEV_MEASURES: tuple[str, ...] = ("RR@10",)
TREC_DL_MEASURES: tuple[str, ...] = ("nDCG@10", "R(rel=2)@1000", "AP(rel=2)@1000")
COLLECTION_FILES = ("collection.tsv", "collection.tsv.gz")


def is_msmarco_folder(root: Path) -> bool:
    """Whether ``root`` holds an MS MARCO ``collection.tsv`` (and no BEIR ``corpus.jsonl``)."""
    has_beir = any((root / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz"))
    return not has_beir and any((root / f).is_file() for f in COLLECTION_FILES)


@dataclass(frozen=True)
class MsMarcoFolder(BeirDataset):
    """A folder in MS MARCO layout (``name``, ``root``, ``label`` and ``corpus`` as a BEIR folder's)."""

    @property
    def ignore_identical_ids(self) -> bool:
        """False: MS MARCO's query and passage ids are separate numberings (query 1 is not passage 1)."""
        return False

    @property
    def splits(self) -> list[str]:
        found = {p.name[len("qrels."):-len(".tsv")] for p in self.root.glob("qrels.*.tsv")}
        if (self.root / "qrels.tsv").is_file():
            found.add("test")
        return sorted(found)

    def qrels_path(self, split: str = "test") -> Path:
        specific = self.root / f"qrels.{split}.tsv"
        if specific.is_file() or split != "test":
            return specific
        return self.root / "qrels.tsv"

    def qrels(self, split: str = "test") -> dict[str, dict[str, int]]:
        path = self.qrels_path(split)
        if not path.is_file():
            have = ", ".join(self.splits) or "none"
            raise InputError(f"no qrels for split {split!r} (qrels.{split}.tsv or, for test, qrels.tsv; "
                             f"splits: {have})", path=self.root)
        return read_qrels(path)

    def queries(self, split: str = "test") -> dict[str, str]:
        """The queries judged in ``split``, from ``queries.<split>.tsv`` or else ``queries.tsv``."""
        judged = self.qrels(split)
        path = self.root / f"queries.{split}.tsv"
        if not path.is_file():
            path = self.root / "queries.tsv"
        queries = read_queries(path)
        missing = [q for q in judged if q not in queries]
        if missing:
            raise InputError(f"{len(missing)} judged quer{'y' if len(missing) == 1 else 'ies'} of {self.qrels_path(split)} "
                             f"{'has' if len(missing) == 1 else 'have'} no text (first: {missing[0]!r})", path=path)
        return {qid: text for qid, text in queries.items() if qid in judged}

    def official_measures(self, split: str = "test") -> tuple[str, ...]:
        """TREC DL's measures for graded qrels (a grade above 1), MS MARCO dev's (RR@10) otherwise."""
        return graded_measures(self.qrels(split))


def graded_measures(qrels: dict[str, dict[str, int]]) -> tuple[str, ...]:
    """TREC DL measures when ``qrels`` have grades above 1, else MS MARCO dev's."""
    graded = any(grade > 1 for docs in qrels.values() for grade in docs.values())
    return TREC_DL_MEASURES if graded else MSMARCO_DEV_MEASURES


FOLDER_LAYOUTS.append((is_msmarco_folder, lambda name, root: MsMarcoFolder(name=name, root=root)))
