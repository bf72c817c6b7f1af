"""The FAISS index layer: one module used by search, hard-negative mining and dynamic negatives.

Flat, HNSW, IVF and IVF-PQ come from one :class:`IndexConfig` (they differ only by a FAISS
factory string). Documents are encoded in chunks that are saved as they finish, so a killed build
resumes from the last complete chunk, memory stays bounded by one chunk plus the index, and
``--shard I/N`` builds encode disjoint sets of chunks that :func:`merge_shards` joins into the
index an unsharded build gives. An index folder holds ``index.faiss`` (FAISS's own format),
``docids.txt`` and ``manifest.json`` (written last; see :mod:`rankwise.retrieval.manifest`). No pickle.
When FAISS sees GPUs, flat and IVF indexes are trained, filled and searched on all of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import MissingExtraError
from rankwise.retrieval.files import atomic_dir, atomic_open, atomic_path, write_json
from rankwise.retrieval.formats import Corpus, Document
from rankwise.retrieval.locks import folder_lock
from rankwise.retrieval.manifest import MANIFEST, check_output_folder, read_manifest, write_manifest
from rankwise.retrieval.workdir import claim_workdir, settings_hash, shard_units

if TYPE_CHECKING:
    from rankwise.retrieval.encoder import Encoder

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
INDEX_FILE = "index.faiss"
IDS_FILE = "docids.txt"
WORK_DIR = ".work"
CHUNK_DIR = "chunks"
COUNTS_EXT = ".counts.json"  # per chunk: documents and how many were truncated


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How to build a FAISS index; every type is one factory string.

    ``nlist`` defaults to about 4*sqrt(N) inverted lists (at least 39 training vectors each),
    ``pq_m`` to dim/8 sub-quantizers of ``pq_bits`` bits (Jégou et al., 2011, product quantization).
    """

    type: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    nlist: int | None = None
    nprobe: int = 32
    pq_m: int | None = None
    pq_bits: int = 8

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise InputError(f"unknown index type {self.type!r}; choose from {', '.join(INDEX_TYPES)}", field="index-type")

    def lists(self, count: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return max(1, min(int(4 * math.sqrt(count)), count // 39))

    def check(self, count: int, dim: int | None = None) -> None:
        """Refuse settings that cannot build an index of ``count`` vectors (of ``dim`` dimensions, when known):
        what can be refused from the options and the corpus size is refused before anything is encoded."""
        if self.nlist is not None and self.nlist < 1:
            raise InputError(f"--nlist must be >= 1, got {self.nlist}", field="nlist")
        if self.type in ("ivf", "ivfpq") and self.lists(count) > count:
            raise InputError(f"IVF with {self.lists(count)} lists needs at least as many documents to train on, got "
                             f"{count}; lower --nlist or use --index-type flat", field="nlist")
        if self.type != "ivfpq":
            return
        if self.pq_m is not None and self.pq_m < 1:
            raise InputError(f"--pq-m must be >= 1, got {self.pq_m}", field="pq_m")
        if not 1 <= self.pq_bits <= 16:
            raise InputError(f"pq_bits must be in 1..16, got {self.pq_bits}", field="pq_bits")
        if count < 2 ** self.pq_bits:
            raise InputError(f"IVF-PQ with {self.pq_bits}-bit codes needs at least {2 ** self.pq_bits} documents, "
                             f"got {count}; use --index-type flat", field="index-type")
        if dim is not None:
            m = self.pq_m or max(1, dim // 8)
            if m > dim or dim % m:
                raise InputError(f"pq_m={m} does not divide the dimension {dim}", field="pq_m")

    def factory(self, dim: int, count: int) -> str:
        """The FAISS ``index_factory`` string for ``count`` vectors of ``dim`` dimensions."""
        self.check(count, dim)
        if self.type == "flat":
            return "Flat"
        if self.type == "hnsw":
            return f"HNSW{self.hnsw_m}"
        if self.type == "ivf":
            return f"IVF{self.lists(count)},Flat"
        return f"IVF{self.lists(count)},PQ{self.pq_m or max(1, dim // 8)}x{self.pq_bits}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _metric(similarity: str) -> int:
    import faiss

    return faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT


def _use_gpu(index_type: str, gpu: bool | None) -> bool:
    import faiss

    available = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if gpu and not available:
        if not hasattr(faiss, "StandardGpuResources"):  # faiss-cpu: no GPU code at all
            raise MissingExtraError("FAISS on GPU", "gpu", "faiss")
        raise InputError("a GPU was asked for but FAISS sees none", field="gpu")
    # FAISS has no GPU HNSW; flat and IVF variants move to all GPUs.
    return available and gpu is not False and index_type != "hnsw"


def _to_gpu(index: Any) -> Any:
    import faiss

    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


class DenseIndex:
    """A loaded FAISS index with its document ids and manifest."""

    search_batch: int = 16384  # queries per FAISS call: bounds the [queries, k] buffers (GPU memory)

    def __init__(self, index: Any, doc_ids: list[str], manifest: dict[str, Any], directory: Path | None = None) -> None:
        self.index = index
        self.doc_ids = doc_ids
        self.manifest = manifest
        self.directory = directory

    @classmethod
    def load(cls, directory: str | Path, *, gpu: bool | None = None, verify: bool = True) -> DenseIndex:
        """Load an index folder, checking its manifest and checksums; on all GPUs when FAISS sees any."""
        import faiss

        directory = Path(directory)
        manifest = read_manifest(directory, kinds=("dense",), verify=verify)
        index = faiss.read_index(str(directory / INDEX_FILE))
        doc_ids = (directory / IDS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
        if len(doc_ids) != index.ntotal:
            raise InputError(f"{len(doc_ids)} ids for {index.ntotal} vectors", path=directory / IDS_FILE)
        config = IndexConfig(**manifest["config"])
        if config.type in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(index).nprobe = config.nprobe
        if config.type == "hnsw":
            index.hnsw.efSearch = config.ef_search
        if _use_gpu(config.type, gpu):
            index = _to_gpu(index)
        return cls(index, doc_ids, manifest, directory)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, positions)`` for each row of ``vectors``; a position of -1 means no hit."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"query vectors of shape {vectors.shape} for an index of dimension {self.dim}")
        k, step = min(k, len(self)), max(1, self.search_batch)
        if len(vectors) <= step:
            return self.index.search(vectors, k)
        parts = [self.index.search(vectors[s:s + step], k) for s in range(0, len(vectors), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def reconstruct(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors at ``positions`` (``float32 [n, dim]``; exact for flat and HNSW, decoded for IVF-PQ).

        Used where documents stay fixed while queries move (ADORE's training with a fixed index).
        """
        import faiss

        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise InputError(f"positions outside 0..{len(self) - 1}", path=self.directory)
        index = self.index  # a CPU index: load with gpu=False where vectors are read back
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            ivf = None
        if ivf is not None and not ivf.direct_map.type:
            ivf.make_direct_map()
        return np.asarray(index.reconstruct_batch(positions), dtype=np.float32).reshape(len(positions), self.dim)


# ---------------------------------------------------------------------------------------------
# Building


def _identity(corpus: Corpus, encoder: Encoder, config: IndexConfig, chunk_size: int) -> dict[str, Any]:
    """Everything that determines the vectors and the index; equal identities give equal builds."""
    return {
        "encoder": encoder.describe(),
        "config": config.to_dict(),
        "source": {"path": str(corpus.path), "sha256": corpus.fingerprint},
        "chunk_size": chunk_size,
    }


def _same_build(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("config", "chunk_size")
    return (all(a.get(k) == b.get(k) for k in keys)
            and a.get("encoder", {}).get("fingerprint") == b.get("encoder", {}).get("fingerprint")
            and a.get("source", {}).get("sha256") == b.get("source", {}).get("sha256"))


def _build_key(identity: dict[str, Any]) -> str:
    """The hash of what makes the chunk vectors (encoder, corpus, chunk size, shard): equal keys, equal chunks.

    The index config is not part of it: the chunks of a build refused for its config (or killed) are
    reused by a build of another index type into the same folder.
    """
    return settings_hash({"chunk_size": identity.get("chunk_size"),
                          "fingerprint": identity.get("encoder", {}).get("fingerprint"),
                          "source": identity.get("source", {}).get("sha256"), "shard": identity.get("shard")})


def check_dense_build(corpus: Corpus, out: str | Path, config: IndexConfig, *, backend: Backend | str = "torch",
                      chunk_size: int = 8192, shard: tuple[int, int] | None = None, force: bool = False,
                      progress: bool = True) -> int:
    """The checks of a dense build that need no model: ``out`` itself, an index there built another way
    (corpus, config, chunk size or a quantized backend's vectors differ) without ``force``, a corpus that does not parse, and
    settings the corpus size rules out. Returns the document count. Run before the encoder is loaded
    or exported; :func:`build_dense_index` repeats what needs the encoder."""
    out = Path(out)
    check_output_folder(out)
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {chunk_size}", field="chunk_size")
    if (out / MANIFEST).is_file() and not force:
        existing = read_manifest(out, verify=False)
        wanted = {"config": config.to_dict(), "chunk_size": chunk_size,
                  "source": corpus.fingerprint, "shard": list(shard) if shard else None,
                  "precision": Backend.parse(backend).precision}
        have = {"config": existing.get("config"), "chunk_size": existing.get("chunk_size"),
                "source": existing.get("source", {}).get("sha256"), "shard": existing.get("shard"),
                "precision": Backend.from_record(existing.get("encoder", {}), field="encoder.backend").precision}
        differ = sorted(k for k in wanted if wanted[k] != have[k])
        if differ:
            raise InputError(f"holds an index built with other {', '.join(differ)}; pass --force to replace it "
                             "or choose another --out", path=out)
    count = _count(corpus, progress)
    config.check(count)
    return count


def _chunks(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _chunk_name(number: int) -> str:
    return f"{number:06d}"


def _chunk_truncated(chunk: Path) -> int | None:
    """The documents of a finished chunk that the encoder cut to its max_length (None: not recorded,
    a chunk encoded before the count was kept)."""
    file = Path(f"{chunk}{COUNTS_EXT}")
    if not file.is_file():
        return None
    value = json.loads(file.read_text(encoding="utf-8")).get("truncated")
    return None if value is None else int(value)


def _total_truncated(counts: Iterable[int | None]) -> int | None:
    """The sum of per-chunk counts; None when any chunk has none."""
    counts = list(counts)
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def _count(corpus: Corpus, progress: bool) -> int:
    """The corpus's document count, every line checked (once: the corpus keeps the count)."""
    from tqdm.auto import tqdm

    if getattr(corpus, "_count", None) is None:
        for _ in tqdm(corpus, desc="reading corpus", unit="doc", disable=not progress, leave=False):
            pass
    return len(corpus)


def _chunk_files(chunk_dir: Path, number: int) -> list[Path]:
    name = _chunk_name(number)
    return [chunk_dir / f"{name}{ext}" for ext in (".npy", ".ids", COUNTS_EXT)]


def _chunk_problem(chunk_dir: Path, number: int, docs: int, dim: int) -> str | None:
    """Why a finished chunk in the work folder cannot be used (truncated, unreadable), or None."""
    npy, ids, counts = _chunk_files(chunk_dir, number)
    try:
        vectors = np.load(npy, mmap_mode="r", allow_pickle=False)
        shape, dtype = vectors.shape, vectors.dtype
        del vectors
        if shape != (docs, dim) or dtype != np.float32:
            return f"{npy.name} holds {dtype} {shape}, not float32 ({docs}, {dim})"
        text = ids.read_text(encoding="utf-8")
        if text.count("\n") != docs or not text.endswith("\n"):
            return f"{ids.name} does not hold {docs} ids"
        if counts.is_file():
            json.loads(counts.read_text(encoding="utf-8"))
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise InputError(f"shard {spec!r} is not of the form I/N", field="shard") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"shard {spec!r} needs 0 <= I < N", field="shard")
    return i, n


def build_dense_index(
    corpus: Corpus,
    encoder: Encoder,
    out: str | Path,
    config: IndexConfig | None = None,
    *,
    chunk_size: int = 8192,
    shard: tuple[int, int] | None = None,
    gpu: bool | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode ``corpus`` with ``encoder`` into an index folder ``out``; returns its manifest.

    Resumable: chunk vectors are kept in ``out/.work`` as they finish, and a re-run with the same
    corpus and encoder continues from the last complete chunk (unfinished work made another way is
    discarded only with ``force``, :mod:`rankwise.retrieval.workdir`); a chunk there that cannot be
    read (a full disk, a bad copy) is encoded again. A folder that already holds a complete index
    built the same way is reused; one built another way is refused unless ``force``. The corpus is
    read and checked in full, and the settings checked against its size, before anything is encoded.
    The index is assembled in a temporary folder beside ``out`` and swapped in whole when complete:
    until then ``out`` keeps its old index, searchable and unchanged. The folder is locked while
    the build runs (:mod:`rankwise.retrieval.locks`): a second build of it is refused. With
    ``shard=(I, N)`` only chunks ``c`` with ``c % N == I`` are encoded and the folder becomes a shard
    for :func:`merge_shards`.
    """
    config = config or IndexConfig()
    out = Path(out)
    check_output_folder(out)
    with folder_lock(out):
        return _build_dense_index(corpus, encoder, out, config, chunk_size=chunk_size, shard=shard, gpu=gpu,
                                  force=force, progress=progress)


def _build_dense_index(corpus: Corpus, encoder: Encoder, out: Path, config: IndexConfig, *, chunk_size: int,
                       shard: tuple[int, int] | None, gpu: bool | None, force: bool, progress: bool) -> dict[str, Any]:
    from rankwise.retrieval.progress import CostBar

    identity = _identity(corpus, encoder, config, chunk_size)
    identity["shard"] = list(shard) if shard else None
    if (out / MANIFEST).is_file():
        existing = read_manifest(out, verify=False)
        if _same_build(existing, identity) and existing.get("shard") == identity["shard"]:
            log.info("%s already holds this index; reusing it", out)
            return read_manifest(out)
        if not force:
            raise InputError("holds an index built from other data, encoder or settings; pass --force to replace it "
                             "or choose another --out", path=out)
        # with force the old index stays in place, searchable, until the new one is swapped in

    count = _count(corpus, progress)
    config.check(count, encoder.dim)
    n_chunks = math.ceil(count / chunk_size)
    mine = shard_units(n_chunks, *shard) if shard else list(range(n_chunks))  # torchrun's share of the units
    work = out / WORK_DIR
    chunk_dir = work / CHUNK_DIR
    claim_workdir(work, identity, key=_build_key(identity), force=force, what="an unfinished index build",
                  has_work=lambda: chunk_dir.is_dir() and any(chunk_dir.glob("*.npy")))
    chunk_dir.mkdir(parents=True, exist_ok=True)

    def docs_in(c: int) -> int:
        return min(chunk_size, count - c * chunk_size)

    done = set()
    for c in mine:
        if not (chunk_dir / f"{_chunk_name(c)}.npy").is_file():
            continue
        problem = _chunk_problem(chunk_dir, c, docs_in(c), encoder.dim)
        if problem is None:
            done.add(c)
        else:
            log.warning("%s: chunk %d of the unfinished build cannot be read (%s); encoding it again", out, c, problem)
            for file in _chunk_files(chunk_dir, c):
                file.unlink(missing_ok=True)
    todo_docs = sum(docs_in(c) for c in mine)
    if done:
        log.info("resuming %s: %d of %d chunks already encoded", out, len(done), len(mine))
    empty = encoded = 0
    mine_set = set(mine)
    with CostBar(total=todo_docs, desc=f"indexing {corpus.path.name}", unit="doc", disable=not progress) as bar:
        bar.update(sum(docs_in(c) for c in done))
        for number, docs in enumerate(_chunks(iter(corpus), chunk_size)):
            if number not in mine_set:
                continue
            if number in done:  # a chunk encoded before its count was kept: count it (tokenizing only)
                counts = chunk_dir / f"{_chunk_name(number)}{COUNTS_EXT}"
                if not counts.is_file():
                    write_json(counts, {"documents": len(docs),
                                        "truncated": encoder.count_truncated([d.full_text for d in docs])})
                continue
            texts = [d.full_text for d in docs]
            empty += sum(1 for d in docs if not d.text.strip())
            encoding = encoder.encode(texts, task="document", progress=bar)
            vectors = encoding.vectors
            name = _chunk_name(number)
            write_json(chunk_dir / f"{name}{COUNTS_EXT}", {  # truncated None: no tokenizer to count with
                "documents": len(docs), "truncated": encoding.truncated})
            with atomic_open(chunk_dir / f"{name}.ids") as fh:
                fh.write("".join(d.doc_id + "\n" for d in docs))
            with atomic_path(chunk_dir / f"{name}.npy") as tmp:  # written last: marks the chunk finished
                with open(tmp, "wb") as fh:
                    np.save(fh, vectors, allow_pickle=False)
            encoded += 1
    log.info("%s: %d chunks encoded in this run, %d kept from before", out, encoded, len(done))
    if empty:
        warnings.warn(f"{corpus.path}: {empty} documents have empty text; they are indexed all the same", stacklevel=3)

    chunks = [chunk_dir / _chunk_name(c) for c in mine]
    truncated = _total_truncated(_chunk_truncated(chunk) for chunk in chunks)
    with atomic_dir(out) as new:  # the work folder goes with the old contents
        if shard is not None:
            os.replace(chunk_dir, new / CHUNK_DIR)
            manifest = write_manifest(
                new, "dense-shard",
                files=[f"{CHUNK_DIR}/{_chunk_name(c)}{ext}" for c in mine for ext in (".npy", ".ids")],
                **identity, count=count, chunks=mine, n_chunks=n_chunks, truncated=truncated,
            )
        else:
            manifest = _assemble(chunks, new, identity, count, gpu=gpu, progress=progress, truncated=truncated)
    return manifest


def merge_shards(shards: Sequence[str | Path], out: str | Path, *, gpu: bool | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Join shard folders from ``build_dense_index(shard=...)`` into one index, identical to an unsharded build.

    As a build, the merge is assembled beside ``out`` and swapped in whole, under ``out``'s lock.
    """
    if not shards:
        raise InputError("no shard folders given to merge")
    manifests = [read_manifest(s, kinds=("dense-shard",)) for s in shards]
    first = manifests[0]
    n = first["shard"][1]
    seen: dict[int, Path] = {}
    for folder, m in zip(shards, manifests):
        if not _same_build(first, m) or m["shard"][1] != n:
            raise InputError(f"shard was built from other data, encoder or settings than {shards[0]}", path=folder)
        i = m["shard"][0]
        if i in seen:
            raise InputError(f"shard {i}/{n} is given twice ({seen[i]})", path=folder)
        seen[i] = Path(folder)
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise InputError(f"shards {', '.join(f'{i}/{n}' for i in missing)} are missing", path=shards[0])
    owner = {c: seen[m["shard"][0]] for m in manifests for c in m["chunks"]}
    chunks = [owner[c] / CHUNK_DIR / _chunk_name(c) for c in range(first["n_chunks"])]
    identity = {k: first[k] for k in ("encoder", "config", "source", "chunk_size")}
    identity["shard"] = None
    out = Path(out)
    check_output_folder(out)
    IndexConfig(**identity["config"]).check(first["count"], identity["encoder"]["dim"])
    truncated = _total_truncated(m.get("truncated") for m in manifests)
    with folder_lock(out), atomic_dir(out) as new:
        manifest = _assemble(chunks, new, identity, first["count"], gpu=gpu, progress=progress, truncated=truncated)
    return manifest


def _train_sample(chunks: list[Path], limit: int) -> np.ndarray:
    parts, total = [], 0
    for chunk in chunks:
        if total >= limit:
            break
        x = np.load(f"{chunk}.npy", allow_pickle=False)[: limit - total]
        parts.append(x)
        total += len(x)
    return np.ascontiguousarray(np.concatenate(parts))


def _assemble(chunks: list[Path], out: Path, identity: dict[str, Any], count: int, *, gpu: bool | None,
              progress: bool, truncated: int | None = None) -> dict[str, Any]:
    """Add chunk vectors, in order, to a FAISS index; write index, ids and (last) the manifest
    (``truncated``: documents cut to the encoder's max_length, None when unknown)."""
    import faiss
    from tqdm.auto import tqdm

    config = IndexConfig(**identity["config"])
    dim = identity["encoder"]["dim"]
    factory = config.factory(dim, count)
    index = faiss.index_factory(dim, factory, _metric(identity["encoder"]["similarity"]))
    if config.type == "hnsw":
        index.hnsw.efConstruction = config.ef_construction
    on_gpu = _use_gpu(config.type, gpu)
    if on_gpu:
        index = _to_gpu(index)
    if not index.is_trained:
        lists = config.lists(count)
        sample = _train_sample(chunks, min(count, max(256 * lists, 2 ** config.pq_bits * 64)))
        log.info("training %s on %d vectors", factory, len(sample))
        index.train(sample)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / IDS_FILE) as ids:
        for chunk in tqdm(chunks, desc="adding to index", unit="chunk", disable=not progress, leave=False):
            index.add(np.ascontiguousarray(np.load(f"{chunk}.npy", allow_pickle=False)))
            ids.write(Path(f"{chunk}.ids").read_text(encoding="utf-8"))
    if index.ntotal != count:
        raise RuntimeError(f"index holds {index.ntotal} vectors, the corpus {count} documents")
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    with atomic_path(out / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    return write_manifest(out, "dense", files=[INDEX_FILE, IDS_FILE], **identity, count=count, factory=factory,
                          metric=identity["encoder"]["similarity"], truncated=truncated)
