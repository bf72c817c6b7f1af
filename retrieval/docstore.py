"""Random access to a collection's documents by id, without loading the collection.

:class:`DocStore` reads one document with one positional read: a table of ``(id hash -> byte
offset)`` over the corpus file, sorted by hash, is built once (one streaming pass, validating every
line as :class:`~retrieval.formats.Corpus` does) and cached under
``cache_root()/docstores/<corpus sha256[:16]>/`` as plain ``.npy`` arrays (loaded memory-mapped,
``allow_pickle=False``) with a ``manifest.json`` written last. The corpus fingerprint recorded in
the manifest tells a stale table from a current one; a stale or damaged cache is rebuilt.

Ids are hashed with 64-bit BLAKE2b; every read checks the parsed id against the one asked for, and
ids whose hashes collide sit side by side in the table and are told apart by reading each.

``.gz`` corpora cannot be read at an offset: for them the store keeps, in memory, only the
documents asked for (:meth:`DocStore.preload` or the ids passed to :meth:`get_many`), found by one
streaming pass over the corpus per call that needs ids not yet loaded. Preload the ids you will
need in one call.
"""

from __future__ import annotations

import hashlib
import os
import sys
from array import array
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.files import atomic_open
from rankwise.retrieval.formats import Corpus, Document, document_parser
from rankwise.retrieval.manifest import read_manifest, remove_manifest, write_manifest
from rankwise.retrieval.paths import cache_root

KIND = "docstore"
_ARRAYS = ("hashes", "offsets", "lengths", "lines")


def id_hash(doc_id: str) -> int:
    """The 64-bit key of a document id in the table (BLAKE2b, little-endian, unsigned)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


class DocStore:
    """Documents of a corpus file (BEIR ``corpus.jsonl`` or MS MARCO ``collection.tsv``) by id.

    ``corpus`` is a path (file or BEIR folder) or a :class:`Corpus`. The store reflects the corpus
    as it was when the store was opened. ``progress``: show a bar while building the table (``None``:
    only on a terminal).
    """

    def __init__(self, corpus: str | Path | Corpus, *, progress: bool | None = None) -> None:
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        self.path = self.corpus.path
        self._parse = document_parser(self.corpus.format)
        self.random_access = self.path.suffix != ".gz"
        self._loaded: dict[str, Document] = {}
        self._absent: set[str] = set()  # .gz: ids a pass did not find
        self._fd: int | None = None
        self.cache_dir: Path | None = None
        if self.random_access:
            self.cache_dir = cache_root() / "docstores" / self.corpus.fingerprint[:16]
            self._load_or_build(progress)

    def __repr__(self) -> str:
        return f"DocStore({str(self.path)!r})"

    # -- public API -------------------------------------------------------------------------

    def get(self, doc_id: str) -> Document:
        """The document with this id; an id not in the corpus is an :class:`InputError`."""
        doc = self.find(doc_id)
        if doc is None:
            raise InputError(f"document id {doc_id!r} is not in the corpus", path=self.path)
        return doc

    def get_many(self, doc_ids: Iterable[str]) -> list[Document]:
        """The documents with these ids, in the same order (one corpus pass at most for ``.gz``)."""
        doc_ids = list(doc_ids)
        if not self.random_access:
            self.preload(doc_ids)
        return [self.get(doc_id) for doc_id in doc_ids]

    def find(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None`` when the corpus has no such id."""
        if not self.random_access:
            if doc_id not in self._loaded and doc_id not in self._absent:
                self.preload([doc_id])
            return self._loaded.get(doc_id)
        key = np.uint64(id_hash(doc_id))
        i = int(np.searchsorted(self._hashes, key, side="left"))
        while i < len(self._hashes) and self._hashes[i] == key:
            doc = self._read(i)
            if doc.doc_id == doc_id:
                return doc
            i += 1  # a different id with the same hash
        return None

    def preload(self, doc_ids: Iterable[str]) -> None:
        """For ``.gz`` corpora: keep these documents in memory (one streaming pass); else nothing."""
        if self.random_access:
            return
        wanted = set(doc_ids) - self._loaded.keys() - self._absent
        if not wanted:
            return
        for doc in self.corpus:
            if doc.doc_id in wanted:
                self._loaded[doc.doc_id] = doc
                wanted.discard(doc.doc_id)
                if not wanted:
                    break
        self._absent |= wanted

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.find(doc_id) is not None

    def __len__(self) -> int:
        return len(self._hashes) if self.random_access else len(self.corpus)

    def close(self) -> None:
        """Close the corpus file (reopened on the next read)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DocStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()

    def __getstate__(self) -> dict:
        """Pickled for worker processes as its corpus (and any .gz documents loaded); the table is re-mapped."""
        return {"corpus": self.corpus, "loaded": self._loaded, "absent": self._absent}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["corpus"], progress=False)  # type: ignore[misc]
        self._loaded, self._absent = state["loaded"], state["absent"]

    # -- reading ----------------------------------------------------------------------------

    def _read(self, i: int) -> Document:
        offset, length, number = int(self._offsets[i]), int(self._lengths[i]), int(self._lines[i])
        if hasattr(os, "pread"):  # positional: safe in forked workers that share the descriptor
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            raw = os.pread(self._fd, length, offset)
        else:  # pragma: no cover - Windows
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                raw = fh.read(length)
        line = raw.decode("utf-8").rstrip("\r\n")
        return self._parse(self.path, number, line)

    # -- the table --------------------------------------------------------------------------

    def _load_or_build(self, progress: bool | None) -> None:
        """Open the cached table if it was built from this very corpus file; else (re)build it."""
        assert self.cache_dir is not None
        try:
            manifest = read_manifest(self.cache_dir, (KIND,))
            current = manifest.get("corpus_sha256") == self.corpus.fingerprint
            if current:
                self._open_arrays()
        except (InputError, ValueError, OSError):
            current = False
        if not current:
            self._build(progress)

    def _open_arrays(self) -> None:
        assert self.cache_dir is not None
        arrays = {name: np.load(self.cache_dir / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
        if len({len(a) for a in arrays.values()}) != 1:
            raise ValueError("docstore arrays differ in length")
        self._hashes, self._offsets, self._lengths, self._lines = (arrays[name] for name in _ARRAYS)

    def _build(self, progress: bool | None) -> None:
        """One pass over the corpus: validate each line, record its id hash, offset, length, line."""
        assert self.cache_dir is not None
        hashes, offsets, lengths, lines = array("Q"), array("q"), array("q"), array("q")
        offset = 0
        size = self.path.stat().st_size
        disable = None if progress is None else not progress
        with open(self.path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True, disable=disable, file=sys.stderr,
                                               desc=f"docstore: indexing {self.path.name}") as bar:
            pending = 0
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise InputError(f"not valid UTF-8 (byte {err.start} of the line)", path=self.path,
                                     line=number) from None
                if line.strip():
                    doc = self._parse(self.path, number, line)
                    hashes.append(id_hash(doc.doc_id))
                    offsets.append(offset)
                    lengths.append(len(raw))
                    lines.append(number)
                offset += len(raw)
                pending += len(raw)
                if pending >= 1 << 22:
                    bar.update(pending)
                    pending = 0
            bar.update(pending)
        if not hashes:
            raise InputError("the corpus is empty", path=self.path)
        key = np.frombuffer(hashes, dtype=np.uint64)
        order = np.argsort(key, kind="stable")
        table = {
            "hashes": key[order],
            "offsets": np.frombuffer(offsets, dtype=np.int64)[order],
            "lengths": np.frombuffer(lengths, dtype=np.int64)[order],
            "lines": np.frombuffer(lines, dtype=np.int64)[order],
        }
        self._hashes, self._offsets, self._lengths, self._lines = (table[name] for name in _ARRAYS)
        self._refuse_duplicates()
        remove_manifest(self.cache_dir)
        for name in _ARRAYS:
            with atomic_open(self.cache_dir / f"{name}.npy", "wb") as out:
                np.save(out, table[name], allow_pickle=False)
        write_manifest(self.cache_dir, KIND, [f"{name}.npy" for name in _ARRAYS],
                       corpus=str(self.path), corpus_sha256=self.corpus.fingerprint,
                       corpus_format=self.corpus.format, count=len(key))
        self._open_arrays()  # memory-mapped: the arrays built in memory are let go

    def _refuse_duplicates(self) -> None:
        """Read the ids of each run of equal hashes: the same id twice is an error, as in :class:`Corpus`."""
        starts = np.flatnonzero(self._hashes[1:] != self._hashes[:-1]) + 1
        bounds = np.concatenate(([0], starts, [len(self._hashes)]))
        for run in np.flatnonzero(np.diff(bounds) > 1):
            seen: set[str] = set()
            for i in sorted(range(int(bounds[run]), int(bounds[run + 1])), key=lambda j: int(self._lines[j])):
                doc_id = self._read(i).doc_id
                if doc_id in seen:
                    raise InputError(f"duplicate document id {doc_id!r}", path=self.path, line=int(self._lines[i]),
                                     field="id" if self.corpus.format == "msmarco" else "_id")
                seen.add(doc_id)
        self.close()
