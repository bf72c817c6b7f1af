"""Any ir_datasets collection by name (``irds:msmarco-passage/trec-dl-2019/judged``).

ir_datasets (MacAvaney et al., SIGIR 2021) knows where every collection's files come from and
how to read them; rankwise reads queries and qrels through it and exports the documents once into
its own cache (``cache_root()/datasets/irds/<docs parent>/corpus.jsonl``), where the BM25 and dense
indexes of :mod:`rankwise.retrieval.cached` are built from them. The export is keyed by ir_datasets' docs
parent, so ``msmarco-passage/dev/small`` and ``msmarco-passage/trec-dl-2019/judged`` share one
corpus and one set of indexes.

Files come from ir_datasets' cache (``$IR_DATASETS_HOME``, default ``~/.ir_datasets``); a file
that is not there is downloaded by ir_datasets (checksummed), as BEIR zips are. In offline mode
(``RANKWISE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) ir_datasets' network sources are switched off
while rankwise reads, and a missing file ends the read with one :class:`InputError` naming the
dataset and the file's URL: fetch it once where a network is (``ir_datasets export NAME qrels``,
for instance), or copy its files under ``$IR_DATASETS_HOME`` the way ir_datasets lays them out.
Needs the ``experiments`` extra (ir_datasets).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rankwise.eval.datasets import SCHEMES
from rankwise.eval.metrics import DEFAULT_MEASURES
from rankwise.eval.msmarco import MSMARCO_DEV_MEASURES, TREC_DL_MEASURES
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import atomic_open, write_json
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.paths import cache_root, offline

_FEATURE = "Reading irds: datasets"

PREFIX = "irds:"
_SOURCE_RECORD = ".rankwise-source.json"
_T = TypeVar("_T")

# ir_datasets name patterns -> the collection's official measures (first match wins).
OFFICIAL_MEASURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"^msmarco-passage(-v2)?/trec-dl-", TREC_DL_MEASURES),
    (r"^msmarco-document(-v2)?/trec-dl-", TREC_DL_MEASURES),
    (r"^msmarco-passage/dev(/|$)", MSMARCO_DEV_MEASURES),
)


class _NotCached(BaseException):
    """Raised by a network source while rankwise reads: not an ``Exception``, so that ir_datasets'
    ``except Exception`` retry loops cannot swallow it and no download is attempted."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Within this block ir_datasets cannot reach the network: every download raises ``_NotCached``."""
    requires("ir_datasets", "experiments", _FEATURE)
    from ir_datasets.util import download

    def blocked(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _NotCached(str(getattr(self, "url", None) or getattr(self, "uri", "?")))

    patched = [(download.RequestsDownload, "__iter__"), (download.RequestsDownload, "stream"),
               (download.GoogleDriveDownload, "stream"), (download.GoogleCloudBucketStream, "stream")]
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr in patched]
    for cls, attr in patched:
        setattr(cls, attr, blocked)
    try:
        yield
    finally:
        for cls, attr, original in saved:
            setattr(cls, attr, original)


def _read(name: str, what: str, fn: Callable[[], _T]) -> _T:
    """``fn()``, downloading what is missing unless :func:`~rankwise.retrieval.paths.offline`; a file that is
    not cached in offline mode, a failed download or an ir_datasets failure becomes one InputError line."""
    requires("ir_datasets", "experiments", _FEATURE)
    from ir_datasets.util import home_path

    try:
        with no_downloads() if offline() else contextlib.nullcontext():
            return fn()
    except _NotCached as err:
        raise InputError(
            f"ir_datasets {name!r}: its {what} are not cached under {home_path()} (IR_DATASETS_HOME) and "
            f"downloads are off (RANKWISE_OFFLINE or HF_HUB_OFFLINE; the file is {err.url}); fetch it once with "
            f"`ir_datasets export {name} {what}` where a network is, or copy its files there"
        ) from None
    except InputError:
        raise
    except Exception as err:  # a manual-download file, a corrupt archive, a bad line...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"ir_datasets {name!r}: cannot read its {what}: {first}") from None


def official_measures_for(name: str) -> tuple[str, ...]:
    """The official measures of an ir_datasets name (MS MARCO dev, TREC DL), else rankwise's defaults."""
    for pattern, measures in OFFICIAL_MEASURES:
        if re.search(pattern, name):
            return measures
    return DEFAULT_MEASURES


@dataclass(frozen=True)
class IrdsDataset:
    """An ir_datasets collection; the same interface as :class:`rankwise.eval.datasets.BeirDataset`.

    ``name`` is the docs parent (what indexes are cached under), ``label`` the full ir_datasets
    name. The queries and qrels are the ones the name selects: its only split is ``test``.
    """

    label: str
    name: str

    @property
    def splits(self) -> list[str]:
        return ["test"]

    def _dataset(self) -> Any:
        ir_datasets = requires("ir_datasets", "experiments", _FEATURE)
        return ir_datasets.registry[self.label]

    def _check_split(self, split: str) -> None:
        if split != "test":
            raise InputError(f"an ir_datasets name selects its queries itself: name the subset (e.g. "
                             f"irds:{self.label}/...) instead of --split {split}", field="split")

    def qrels(self, split: str = "test") -> dict[str, dict[str, int]]:
        """``{query_id: {doc_id: grade}}`` through ir_datasets."""
        self._check_split(split)

        def read() -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for qrel in self._dataset().qrels_iter():
                out.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
            return out

        qrels = _read(self.label, "qrels", read)
        if not qrels:
            raise InputError(f"ir_datasets {self.label!r} has no judgements")
        return qrels

    def queries(self, split: str = "test") -> dict[str, str]:
        """The judged queries' text (``default_text()``), in ir_datasets' order."""
        judged = self.qrels(split)
        queries = _read(self.label, "queries",
                        lambda: {str(q.query_id): q.default_text() for q in self._dataset().queries_iter()})
        missing = [q for q in judged if q not in queries]
        if missing:
            raise InputError(f"ir_datasets {self.label!r}: {len(missing)} judged queries have no text "
                             f"(first: {missing[0]!r})")
        return {qid: text for qid, text in queries.items() if qid in judged}

    def official_measures(self, split: str = "test") -> tuple[str, ...]:
        return official_measures_for(self.label)

    @property
    def ignore_identical_ids(self) -> bool:
        """BEIR's convention for ``beir/...`` names; elsewhere (MS MARCO) query and document ids are
        separate numberings, and a document whose id equals the query's is kept."""
        return self.label.startswith("beir/")

    @property
    def corpus(self) -> Corpus:
        """The documents, exported once into rankwise's cache as ``corpus.jsonl``."""
        folder = cache_root() / "datasets" / "irds" / self.name.replace("/", "__")
        path = folder / "corpus.jsonl"
        if not path.is_file():
            count = _read(self.label, "docs", lambda: _export_docs(self._dataset(), path))
            ir_datasets = requires("ir_datasets", "experiments", _FEATURE)
            write_json(folder / _SOURCE_RECORD, {
                "ir_datasets": self.name, "ir_datasets_version": ir_datasets.__version__, "documents": count,
                "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        return Corpus(path)


def _export_docs(dataset: Any, path: Path) -> int:
    from tqdm import tqdm

    count = 0
    with atomic_open(path) as fh:
        for doc in tqdm(dataset.docs_iter(), desc="exporting documents", unit="doc", leave=False):
            text = doc.text if hasattr(doc, "text") else doc.default_text()
            fh.write(json.dumps({"_id": str(doc.doc_id), "title": str(getattr(doc, "title", "") or ""),
                                 "text": str(text)}, ensure_ascii=False) + "\n")
            count += 1
    if not count:
        raise InputError("the collection holds no documents", path=path)
    return count


def irds_dataset(name: str) -> IrdsDataset:
    """The ir_datasets collection ``name`` (without the ``irds:`` prefix); an unknown name is an InputError.

    Its queries and qrels are read (downloaded if need be) at once, so that a collection that cannot
    be had fails here, before any indexing.
    """
    name = name.strip().strip("/")
    ir_datasets = requires("ir_datasets", "experiments", _FEATURE)
    try:
        dataset = ir_datasets.registry[name]
    except KeyError:
        raise InputError(f"unknown ir_datasets name {name!r} (see https://ir-datasets.com)") from None
    if not (dataset.has_queries() and dataset.has_qrels()):
        raise InputError(f"ir_datasets {name!r} has no queries or no qrels: nothing to evaluate")
    parent = ir_datasets.docs_parent_id(name) if dataset.has_docs() else None
    result = IrdsDataset(label=name, name=parent or name)
    result.queries()  # fail now if they are not cached
    return result


SCHEMES["irds"] = irds_dataset
