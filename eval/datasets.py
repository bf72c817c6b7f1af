"""The BEIR datasets: a registry of the official archives and a resolver from a name or folder.

:func:`resolve_dataset` turns what a user typed into a :class:`BeirDataset` (a folder holding
``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``), looking in this order:

1. an existing folder given directly;
2. ``$RANKWISE_DATA/<name>``, the offline mirror, when that variable is set and the folder exists;
3. the download cache (``cache_dir``, else ``$RANKWISE_CACHE/datasets``, else
   ``~/.cache/rankwise/datasets``), downloading the official zip of a known BEIR name into it first:
   the archive's MD5 is checked against the one BEIR publishes, members are refused if they would
   land outside the target (absolute paths, ``..``, symlinks), and everything is unpacked in a
   temporary folder that is renamed into place only once complete, so an interrupted download
   never leaves a folder that looks finished;
4. otherwise an :class:`InputError` naming the dataset, the known names and the mirror searched.

``RANKWISE_BEIR_URL`` replaces the download base URL (a mirror, or a local server in tests).
BEIR: Thakur et al., NeurIPS 2021 Datasets and Benchmarks, https://github.com/beir-cellar/beir.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from tqdm import tqdm

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.paths import cache_root
from rankwise.retrieval.files import write_json
from rankwise.retrieval.formats import Corpus, read_qrels, read_queries
from rankwise.eval.metrics import DEFAULT_MEASURES

# Other layouts register here, so that this module imports none of them (they build on BeirDataset):
# ``scheme:NAME`` openers (eval.irds: ``irds:``) and folder layouts (eval.msmarco: collection.tsv).
SCHEMES: dict[str, Callable[[str], Any]] = {}
FOLDER_LAYOUTS: list[tuple[Callable[[Path], bool], Callable[[str, Path], BeirDataset]]] = []

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"


@dataclass(frozen=True)
class BeirSource:
    """Where BEIR publishes a dataset's zip, and the MD5 it publishes for that zip."""

    url: str
    md5: str


def _src(name: str, md5: str) -> BeirSource:
    return BeirSource(f"{BEIR_BASE_URL}/{name}.zip", md5)


# Name -> official archive and MD5. The values are the "md5" column of the "Available Datasets"
# table in the README of https://github.com/beir-cellar/beir (the same table as the BEIR wiki page
# "Datasets available"); every dataset with a published MD5 is listed. BioASQ, Signal-1M,
# TREC-NEWS and Robust04 are not redistributed by BEIR (no zip, no MD5): see _NOT_DISTRIBUTED.
BEIR_DATASETS: dict[str, BeirSource] = {
    "msmarco": _src("msmarco", "444067daf65d982533ea17ebd59501e4"),
    "trec-covid": _src("trec-covid", "ce62140cb23feb9becf6270d0d1fe6d1"),
    "nfcorpus": _src("nfcorpus", "a89dba18a62ef92f7d323ec890a0d38d"),
    "nq": _src("nq", "d4d3d2e48787a744b6f6e691ff534307"),
    "hotpotqa": _src("hotpotqa", "f412724f78b0d91183a0e86805e16114"),
    "fiqa": _src("fiqa", "17918ed23cd04fb15047f73e6c3bd9d9"),
    "arguana": _src("arguana", "8ad3e3c2a5867cdced806d6503f29b99"),
    "webis-touche2020": _src("webis-touche2020", "46f650ba5a527fc69e0a6521c5a23563"),
    "cqadupstack": _src("cqadupstack", "4e41456d7df8ee7760a7f866133bda78"),
    "quora": _src("quora", "18fb154900ba42a600f84b839c173167"),
    "dbpedia-entity": _src("dbpedia-entity", "c2a39eb420a3164af735795df012ac2c"),
    "scidocs": _src("scidocs", "38121350fc3a4d2f48850f6aff52e4a9"),
    "fever": _src("fever", "5a818580227bfb4b35bb6fa46d9b6c03"),
    "climate-fever": _src("climate-fever", "8b66f0a9126c521bae2bde127b4dc99d"),
    "scifact": _src("scifact", "5f7d1de60b170fc8027bb7898e2efca1"),
}

# In the BEIR table but not downloadable: each has to be rebuilt from its source (BEIR's
# examples/dataset/README.md explains how) and placed under $RANKWISE_DATA or passed as a folder.
_NOT_DISTRIBUTED = ("bioasq", "signal1m", "trec-news", "robust04")

# cqadupstack.zip holds one BEIR folder per StackExchange forum: cqadupstack/<forum>/...
CQADUPSTACK_FORUMS = (
    "android", "english", "gaming", "gis", "mathematica", "physics",
    "programmers", "stats", "tex", "unix", "webmasters", "wordpress",
)

_SOURCE_RECORD = ".rankwise-source.json"
_PARTIAL = ".partial"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

    name: str
    root: Path

    @property
    def label(self) -> str:
        """The name results are reported under (a cqadupstack forum's own name)."""
        return Path(self.name).name

    @property
    def corpus(self) -> Corpus:
        """The documents, streamed (see :class:`rankwise.retrieval.formats.Corpus`)."""
        return Corpus(self.root)

    def official_measures(self, split: str = "test") -> tuple[str, ...]:
        """The measures reported when none are asked for: BEIR's nDCG@10 first."""
        return DEFAULT_MEASURES

    @property
    def ignore_identical_ids(self) -> bool:
        """BEIR's evaluation drops a retrieved document whose id is the query's (see :mod:`rankwise.eval.metrics`)."""
        return True

    @property
    def splits(self) -> list[str]:
        """The splits that have a qrels file, e.g. ``["dev", "test", "train"]``."""
        return sorted(p.name[: -len(".tsv")] for p in (self.root / "qrels").glob("*.tsv") if p.is_file())

    def qrels_path(self, split: str = "test") -> Path:
        return self.root / "qrels" / f"{split}.tsv"

    def qrels(self, split: str = "test") -> dict[str, dict[str, int]]:
        """Judgements of ``split`` as ``{query_id: {doc_id: grade}}``."""
        path = self.qrels_path(split)
        if not path.is_file():
            have = ", ".join(self.splits) or "none"
            raise InputError(f"no qrels file for split {split!r} of dataset {self.name!r} (splits: {have})", path=path)
        return read_qrels(path)

    def queries(self, split: str = "test") -> dict[str, str]:
        """The queries judged in ``split`` (as BEIR's loader does), in the order of ``queries.jsonl``.

        A judged query with no text in ``queries.jsonl`` is an error: scoring it would silently
        count a zero.
        """
        judged = self.qrels(split)
        path = self.root / "queries.jsonl"
        queries = read_queries(path)
        missing = [q for q in judged if q not in queries]
        if missing:
            raise InputError(
                f"{len(missing)} quer{'y' if len(missing) == 1 else 'ies'} judged in {self.qrels_path(split)} "
                f"ha{'s' if len(missing) == 1 else 've'} no text (first: {missing[0]!r})",
                path=path,
            )
        return {qid: text for qid, text in queries.items() if qid in judged}


@dataclass(frozen=True)
class QrelsFile:
    """A plain qrels file as a dataset: its judgements for every split, the judged query ids (no text),
    no corpus, the default measures; query and document ids are not known to share a numbering, so a
    retrieved document whose id is the query's is kept. What an :class:`~rankwise.eval.experiment.Experiment`
    of precomputed runs (``rankwise compare RUN... --qrels FILE``) needs."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    label = name
    root = property(lambda self: self.path)
    corpus = None
    ignore_identical_ids = False

    def official_measures(self, split: str = "test") -> tuple[str, ...]:
        return DEFAULT_MEASURES

    @functools.cached_property
    def _judgements(self) -> dict[str, dict[str, int]]:
        return read_qrels(self.path)

    def qrels(self, split: str = "test") -> dict[str, dict[str, int]]:
        return self._judgements

    def queries(self, split: str = "test") -> dict[str, str]:
        return dict.fromkeys(self._judgements, "")


def default_cache_dir() -> Path:
    """``$RANKWISE_CACHE/datasets``, else ``~/.cache/rankwise/datasets``."""
    return cache_root() / "datasets"


def download_url(name: str) -> str:
    """The URL :func:`resolve_dataset` fetches for a known name (``$RANKWISE_BEIR_URL`` wins)."""
    base = os.environ.get("RANKWISE_BEIR_URL")
    if base:
        return f"{base.rstrip('/')}/{name}.zip"
    return BEIR_DATASETS[name].url


def resolve_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> BeirDataset | Any:
    """Find a BEIR dataset by folder or name, downloading a known one into the cache if needed.

    See the module docstring for the order. ``cqadupstack`` is one dataset per forum: name it
    ``cqadupstack/<forum>`` (e.g. ``cqadupstack/android``). ``download=False`` never touches the
    network: a name not found locally is an :class:`InputError`. ``irds:NAME`` is any ir_datasets
    collection (:mod:`rankwise.eval.irds`), read offline; a folder holding ``collection.tsv`` is MS MARCO
    layout (:mod:`rankwise.eval.msmarco`); a file is a qrels file (:class:`QrelsFile`).
    """
    text = os.fspath(name_or_path)
    scheme, colon, rest = text.partition(":")
    if colon and scheme in SCHEMES:
        return SCHEMES[scheme](rest)
    path = Path(text).expanduser()
    if path.is_dir():
        return _open_folder(path.resolve().name or str(path), path)
    if path.is_file():
        return QrelsFile(path)

    name = text.strip().strip("/")
    valid_name = bool(_NAME.match(name)) and ".." not in name.split("/")
    mirror_env = os.environ.get("RANKWISE_DATA")
    mirror = Path(mirror_env).expanduser() if mirror_env else None
    if valid_name and mirror is not None and (mirror / name).is_dir():
        return _open_folder(name, mirror / name)

    base, _, forum = name.partition("/")
    base = base.lower()
    if valid_name and base in BEIR_DATASETS:
        if base == "cqadupstack" and not forum:
            raise InputError(
                "cqadupstack is one dataset per forum: name one as cqadupstack/<forum>, "
                f"with <forum> one of {', '.join(CQADUPSTACK_FORUMS)}"
            )
        if forum and base != "cqadupstack":
            raise InputError(f"dataset {base!r} has no sub-datasets (got {name!r})")
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        folder = cache / base
        if not folder.is_dir():
            if not download:
                raise InputError(
                    f"dataset {base!r} is not downloaded (looked in {folder}) and downloading is off; "
                    "set RANKWISE_DATA to a folder holding it, or allow the download",
                )
            _download_dataset(base, folder, progress=progress)
        elif not _looks_complete(folder, base):
            raise InputError(
                f"the cached copy of {base!r} is incomplete or not a BEIR folder; delete it to download again",
                path=folder,
            )
        if forum:
            sub = folder / forum
            if not sub.is_dir():
                have = sorted(p.name for p in folder.iterdir() if p.is_dir())
                raise InputError(f"no forum {forum!r} in cqadupstack (forums: {', '.join(have)})", path=folder)
            return _open_folder(name, sub)
        return _open_folder(base, folder)

    raise InputError(_unknown_message(text, mirror, mirror_env))


def _unknown_message(text: str, mirror: Path | None, mirror_env: str | None) -> str:
    name = text.strip()
    if Path(name).expanduser().is_file():
        return f"{name} is a file: expected a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/) or name"
    if name.lower() in _NOT_DISTRIBUTED:
        return (
            f"BEIR does not distribute {name!r}: rebuild it (see BEIR's examples/dataset) and pass its folder "
            "or put it under $RANKWISE_DATA"
        )
    if mirror is None:
        where = "RANKWISE_DATA is not set"
    elif mirror.is_dir():
        local = sorted(p.name for p in mirror.iterdir() if p.is_dir() and not p.name.startswith("."))
        where = f"not in RANKWISE_DATA={mirror_env} (which has: {', '.join(local) or 'nothing'})"
    else:
        where = f"RANKWISE_DATA={mirror_env} is not a folder"
    return (
        f"unknown dataset {name!r}: not an existing folder, {where}, and not a BEIR name "
        f"(known: {', '.join(sorted(BEIR_DATASETS))})"
    )


def _looks_complete(folder: Path, name: str) -> bool:
    if name == "cqadupstack":
        return any(p.is_dir() for p in folder.iterdir())
    try:
        _open_folder(name, folder)
    except InputError:
        return False
    return True


def _open_folder(name: str, root: Path) -> BeirDataset:
    for detect, open_layout in FOLDER_LAYOUTS:
        if detect(root):
            return open_layout(name, root)
    missing = []
    if not any((root / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")):
        missing.append("corpus.jsonl")
    if not (root / "queries.jsonl").is_file():
        missing.append("queries.jsonl")
    if not (root / "qrels").is_dir():
        missing.append("qrels/")
    if missing:
        hint = ""
        if (root / "android").is_dir():
            hint = "; this looks like cqadupstack: pass one forum folder, e.g. " + str(root / "android")
        raise InputError(f"not a BEIR dataset folder: missing {', '.join(missing)}{hint}", path=root)
    return BeirDataset(name=name, root=root)


# --------------------------------------------------------------------------------------------
# Download, verify, extract.


def _download_dataset(name: str, target: Path, *, progress: bool) -> None:
    """Fetch ``name``'s zip, check its MD5, unpack it and rename the result onto ``target``.

    All the work happens in a hidden ``.<name>.<pid>.<random>.partial`` folder beside ``target``,
    removed on any failure; leftovers of a killed process are removed on the next call.
    """
    source = BEIR_DATASETS[name]
    url = download_url(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent, name)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=_PARTIAL, dir=target.parent))
    try:
        archive = work / f"{name}.zip"
        digest = _fetch(url, archive, label=f"{name}.zip", progress=progress)
        if digest != source.md5.lower():
            raise InputError(
                f"checksum mismatch for {name}.zip from {url}: MD5 {digest}, expected {source.md5} "
                "(the download was discarded)"
            )
        unpacked = work / "unpacked"
        _safe_extract(archive, unpacked)
        archive.unlink()
        root = _dataset_root(unpacked, name, archive_label=url)
        if name == "cqadupstack":
            forums = [p for p in root.iterdir() if p.is_dir()]
            if not forums:
                raise InputError(f"the archive from {url} holds no cqadupstack forum folders")
            for forum in forums:
                _open_folder(f"cqadupstack/{forum.name}", forum)
        else:
            _open_folder(name, root)  # refuse to cache an archive that is not a BEIR folder
        write_json(root / _SOURCE_RECORD, {
            "dataset": name,
            "url": url,
            "md5": digest,
            "downloaded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        try:
            os.rename(root, target)
        except OSError:
            if not target.is_dir():  # not a concurrent download that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale_partials(parent: Path, name: str) -> None:
    """Delete work folders of ``name`` left behind by processes that no longer run."""
    for entry in parent.glob(f".{name}.*{_PARTIAL}"):
        pid = entry.name[len(name) + 2:].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _fetch(url: str, dest: Path, *, label: str, progress: bool) -> str:
    """Stream ``url`` into ``dest`` with a progress bar on stderr; return the hex MD5."""
    md5 = hashlib.md5(usedforsecurity=False)  # an integrity check against BEIR's published value
    request = urllib.request.Request(url, headers={"User-Agent": "rankwise"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with open(dest, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                file=sys.stderr, disable=not progress, leave=False,
            ) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    md5.update(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        raise InputError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise InputError(
            f"download of {url} failed: {reason} (offline? set RANKWISE_DATA to a local copy "
            "or RANKWISE_BEIR_URL to a mirror)"
        ) from None
    if total is not None and received != total:
        raise InputError(f"download of {url} was cut short: {received} of {total} bytes")
    return md5.hexdigest()


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' component"
    return None


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, refusing any member that could escape it."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise InputError(f"not a valid zip archive: {err}", path=archive) from None
    with zf:
        members = zf.infolist()
        for info in members:
            reason = _unsafe_reason(info)
            if reason:
                raise InputError(f"refusing to extract the archive: member {info.filename!r} {reason}", path=archive)
        dest.mkdir(parents=True, exist_ok=True)
        base = dest.resolve()
        for info in members:
            relative = PurePosixPath(info.filename.replace("\\", "/"))
            target = (dest / relative).resolve()
            if target != base and base not in target.parents:
                raise InputError(f"refusing to extract the archive: member {info.filename!r} escapes it", path=archive)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


def _dataset_root(unpacked: Path, name: str, *, archive_label: str) -> Path:
    """The folder inside the unpacked archive that holds the dataset (``<name>/`` in BEIR zips)."""
    if (unpacked / name).is_dir():
        return unpacked / name
    entries = [p for p in unpacked.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    if (unpacked / "queries.jsonl").is_file() or (unpacked / "corpus.jsonl").is_file():
        return unpacked
    raise InputError(f"the archive from {archive_label} does not hold a {name}/ dataset folder")
