"""Exports cached per model under ``cache_root()/onnx/<kind>/``, checked before they are loaded.

A folder holds ``model.onnx`` (and ``model.int8.onnx``; for the OpenVINO runtime ``model.plain.onnx`` and
``model.openvino-int8-<calibration>.xml/.bin``, :func:`openvino_graph`), the tokenizer and a ``manifest.json``
written last: format, kind, the model's source fingerprint (SHA-256 over its files), the settings
the runtime needs, the parity records and the SHA-256 and size of every file in the folder (it
lists exactly those). A folder is built in a temporary sibling that replaces it whole when the
manifest is written, so a failed or killed export changes nothing. On load:

- the model's files changed since the export (fingerprint differs): stale, rebuilt;
- a file differs from its checksum: corrupt, never loaded -- rebuilt when the folder is rankwise's
  cache, refused (:class:`CorruptExport`) when the user named the folder. ``onnx.checker`` runs on
  every graph before its checksum is recorded, so a file that still matches its checksum is the
  checked one (running the checker again at every load would hold a second copy of the weights in
  memory);
- int8 asked for and missing: quantized from the fp32 graph and added.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankwise.retrieval.backend.kind import ModelKind
from rankwise.retrieval.backend.build import FP32_FILE, INT8_FILE
from rankwise.retrieval.backend.openvino import INT8_IR_PREFIX, PLAIN_FILE
from rankwise.retrieval.backend.value import ONNX, ONNX_INT8, OPENVINO, OPENVINO_BF16, OPENVINO_INT8, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires
from rankwise.retrieval.files import atomic_dir, file_record, sha256_file, write_json
from rankwise.retrieval.paths import cache_root

FORMAT = "rankwise-onnx"
FORMAT_VERSION = 4  # 2: BERT-family graphs fused by ONNX Runtime's transformer optimizer; 3: causal-LM attention as
# GroupQueryAttention; 4: causal LMs smoothed (SmoothQuant), int8 quantizes their MatMuls except the MLP down projections
MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


class CorruptExport(InputError):
    """An export folder whose files do not match its manifest or fail ``onnx.checker``."""


class OutdatedExport(InputError):
    """An export made by another format version of rankwise (rebuilt in the cache, refused elsewhere)."""


@dataclass(frozen=True)
class Export:
    """A checked export folder: ``file(backend)`` is safe to load."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest["settings"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def file(self, backend: Backend = ONNX) -> Path:
        """The graph ``backend`` (``onnx`` or ``onnx-int8``) runs."""
        return self.folder / (INT8_FILE if backend.int8 else FP32_FILE)


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`export_model` / ``rankwise export``."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def cache_folder(model: str, kind: str, options: dict[str, Any]) -> Path:
    """``cache_root()/onnx/<kind>/<model's last path part>-<hash of its resolved location and options>``."""
    from rankwise.retrieval.backend.sources import local_folder

    where = str(local_folder(model).resolve())
    key = hashlib.sha256(json.dumps({"model": model, "where": where, **options}, sort_keys=True).encode()).hexdigest()
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.rstrip("/").split("/")[-1]) or "model"
    return cache_root() / "onnx" / kind / f"{label}-{key[:12]}"


def read_export(folder: str | Path, *, backend: Backend = ONNX, kind: ModelKind | str | None = None) -> Export:
    """Read and check an export folder: manifest, kind, and the file to load (checksum and ``onnx.checker``)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError("no manifest.json: not an ONNX export, or an unfinished one (re-run `rankwise export`)",
                         path=folder)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptExport(f"unreadable manifest: {err}", path=path) from None
    if manifest.get("format") != FORMAT:
        raise InputError("not a rankwise ONNX export", path=path, field="format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise OutdatedExport(f"an export of format version {manifest.get('format_version')}, not "
                             f"{FORMAT_VERSION}: export it again", path=path, field="format_version")
    if kind is not None and manifest.get("kind") != str(kind):
        raise InputError(f"holds a {manifest.get('kind')} export where a {kind} is needed", path=path, field="kind")
    export = Export(folder, manifest)
    name = export.file(backend).name
    if name not in manifest.get("files", {}):
        raise InputError(f"has no graph for {backend} (export it with --backend {backend})",
                         path=folder, field="files")
    graphs = (FP32_FILE, INT8_FILE, PLAIN_FILE)  # each checked when it is the one loaded
    verify(export, [n for n in manifest["files"] if n not in graphs and not n.startswith(INT8_IR_PREFIX)] + [name])
    return export


def verify(export: Export, names: list[str]) -> None:
    """Refuse files that are missing or differ from their checksum (the graph ``onnx.checker`` passed)."""
    for name in names:
        file, record = export.folder / name, export.manifest["files"][name]
        if not file.is_file():
            raise CorruptExport("missing file listed in manifest.json", path=file)
        if file.stat().st_size != record["bytes"] or sha256_file(file) != record["sha256"]:
            raise CorruptExport("checksum does not match manifest.json (file changed or corrupt); not loaded",
                                path=file)


def check_graph(file: Path) -> None:
    """``onnx.checker`` on a graph file; a graph it rejects is an error naming the file."""
    onnx = requires("onnx", "onnx", "The ONNX backend")

    try:
        onnx.checker.check_model(str(file))
    except Exception as err:  # noqa: BLE001 - ValidationError, protobuf DecodeError, ...
        raise CorruptExport(f"onnx.checker rejects the graph: {str(err).splitlines()[0]}", path=file) from None


def export_model(model: str, kind: ModelKind, out: str | Path, *, backend: Backend | str = ONNX, optimize: bool = False,
                 max_length: int | None = None, reduce_range: bool = False,
                 fingerprint: str | None = None, replace: bool = False) -> Export:
    """Export ``model`` (name or path) as ``kind`` into ``out``, check parity, and write the manifest last.

    Everything is built in a temporary folder beside ``out`` (:func:`rankwise.retrieval.files.atomic_dir`)
    that replaces ``out`` whole only once the manifest is written: a failed or killed export leaves
    ``out`` as it was, and a re-export leaves no file of the previous one behind (a
    ``model.int8.onnx`` included, unless ``backend`` is ``onnx-int8`` again). ``out`` must be new, empty, or an
    export; a folder holding anything else is refused unless ``replace`` (rankwise's own cache).
    """
    from rankwise.retrieval.backend.build import build
    from rankwise.retrieval.backend.sources import source_fingerprint

    backend = Backend.parse(backend)
    if backend.runtime != ONNX.runtime:
        raise InputError(f"an export is for the onnx backends, not {str(backend)!r}", field="backend")
    out = Path(out)
    _check_target(out, replace)
    fingerprint = fingerprint or source_fingerprint(model)
    with atomic_dir(out, wait=replace, what="ONNX export") as tmp:
        built = build(model, kind, tmp, backend=backend, optimize=optimize, max_length=max_length,
                      reduce_range=reduce_range)
        written = _write_manifest(tmp, {"model": model, "kind": kind.name, "source_fingerprint": fingerprint,
                                        "options": {"max_length": max_length, "optimize": optimize}, **built})
    return Export(out, written.manifest)


def _check_target(out: Path, replace: bool) -> None:
    """Refuse an ``out`` that is a file, or a folder of other things (which a swap would delete)."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is a file, not a folder; name a folder to export into", path=out)
    if replace or not out.is_dir() or is_export(out):
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise InputError(f"holds files that are not a rankwise export ({shown}), which exporting would replace; "
                         "name a new or empty folder, or an earlier export", path=out)


def _link_files(source: Path, target: Path, names: list[str]) -> None:
    """Hard-link (or copy, across file systems) the listed files of an export into the folder being rebuilt."""
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)


def _write_manifest(folder: Path, fields: dict[str, Any]) -> Export:
    """Check every graph and write ``manifest.json`` listing every file in ``folder`` (and only those)."""
    onnx = requires("onnx", "onnx", "The ONNX backend")
    onnxruntime = requires("onnxruntime", "onnx", "The ONNX backend")
    import torch

    from rankwise.retrieval.backend.export import OPSET

    declared = set(fields.pop("files"))
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    if missing := declared - set(names):
        raise RuntimeError(f"{folder}: the export did not write {', '.join(sorted(missing))}")
    for name in names:
        if name.endswith(".onnx"):
            check_graph(folder / name)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": onnxruntime.__version__, "opset": OPSET},
                **fields, "files": {n: file_record(folder / n) for n in names}}
    write_json(folder / MANIFEST, manifest)
    return Export(folder, manifest)


def add_int8(export: Export, kind: ModelKind, *, reduce_range: bool = False) -> Export:
    """Quantize an export's fp32 graph to int8, check it, and add it to the manifest.

    The folder is rebuilt beside itself (its files hard-linked, copied where links are not
    possible) and swapped in whole, as :func:`export_model` does.
    """
    from rankwise.retrieval.backend.build import check_parity, quantize

    if export.manifest.get("optimized"):
        raise InputError("the fp32 graph was optimized for the CPU provider and cannot be quantized; export "
                         "again with --backend onnx-int8", path=export.folder)
    prepared = kind.prepare(export.manifest["model"], export.manifest["options"].get("max_length"))
    fields = {k: v for k, v in export.manifest.items() if k not in ("format", "format_version", "created", "versions")}
    with atomic_dir(export.folder, wait=True, what="ONNX export") as tmp:
        _link_files(export.folder, tmp, fields["files"])
        quantize(prepared, tmp / FP32_FILE, tmp / INT8_FILE, reduce_range=reduce_range)
        record = check_parity(prepared, tmp / INT8_FILE, ONNX_INT8)
        fields["parity"] = {**fields["parity"], "int8": record}
        fields["reduce_range"] = reduce_range
        fields["files"] = list(fields["files"]) + [INT8_FILE]
        written = _write_manifest(tmp, fields)
    return Export(export.folder, written.manifest)


def exported(model: str, kind: ModelKind, backend: Backend = ONNX, *, max_length: int | None = None) -> Export:
    """A checked export of ``model``: the folder itself when ``model`` is one, else rankwise's cache.

    The cache is keyed by the model's location and ``max_length``; a stale (model changed) or
    corrupt cached export is rebuilt, a missing int8 graph added (``onnx-int8``). Building loads the torch
    model once; a cache hit does not load torch weights at all.
    """
    if is_export(model):
        return read_export(model, backend=backend, kind=kind)
    from rankwise.retrieval.backend.sources import source_fingerprint
    from rankwise.retrieval.locks import folder_lock

    folder = cache_folder(model, kind.name, {"max_length": max_length})
    fingerprint = source_fingerprint(model)
    with folder_lock(folder, wait=True, what="ONNX export"):  # a second process waits, then reuses the export
        return _cached_export(model, kind, folder, fingerprint, backend=backend, max_length=max_length)


def _cached_export(model: str, kind: ModelKind, folder: Path, fingerprint: str, *, backend: Backend,
                   max_length: int | None) -> Export:
    if (folder / MANIFEST).is_file():
        try:
            export = read_export(folder, kind=kind)
            if export.manifest.get("source_fingerprint") != fingerprint:
                log.warning("%s changed since its ONNX export; exporting again", model)
            elif backend.int8 and INT8_FILE not in export.manifest["files"]:
                return add_int8(export, kind)
            else:
                return read_export(folder, backend=backend, kind=kind) if backend.int8 else export
        except CorruptExport as err:
            log.warning("cached ONNX export is corrupt (%s); exporting again", err)
        except OutdatedExport:
            log.warning("cached ONNX export of %s is of an older format; exporting again", model)
    log.info("exporting %s (%s) to ONNX under %s", model, kind.name, folder)
    return export_model(model, kind, folder, backend=backend, max_length=max_length,
                        fingerprint=fingerprint, replace=True)



def openvino_graph(export: Export, kind: ModelKind, backend: Backend = OPENVINO, *,
                   calibration: Any = None) -> tuple[Path, dict[str, Any]]:
    """The graph of ``export`` the OpenVINO runtime compiles, and its record in the manifest's ``openvino`` section.

    What is missing is made once, parity-checked against torch and added to the manifest with its
    checksums, the folder rebuilt beside itself and swapped in whole (as :func:`add_int8` does): the
    plain fp32 graph (:func:`rankwise.retrieval.backend.openvino.plain_graph`); for ``openvino-bf16``, the
    parity record of that graph run in bfloat16; for ``openvino-int8``, NNCF's int8 IR calibrated on
    ``calibration`` (texts or ``(query, document)`` pairs; a string is the key of an int8 graph already in
    the export, as an index manifest records it).
    """
    from rankwise.retrieval.backend.calibration import calibration_key
    from rankwise.retrieval.backend.openvino import require

    require("openvino")
    key = None
    int8, bf16 = backend.int8, backend.bf16
    if int8:
        require("nncf")
        key = calibration if isinstance(calibration, str) else calibration_key(calibration)
    section = export.manifest.get("openvino", {"int8": {}})
    if "fp32" not in section or (int8 and key not in section["int8"]) or (bf16 and "bf16" not in section):
        if isinstance(calibration, str):
            raise InputError(f"has no openvino-int8 graph calibrated as {key!r} (the index that names it was built "
                             "with another export): build the index again", path=export.folder, field="calibration")
        export = _add_openvino(export, kind, key if int8 else None, calibration, bf16=bf16)
        section = export.manifest["openvino"]
    names = [section["fp32"]["graph"]] + (section["int8"][key]["files"] if int8 else [])
    verify(export, names)
    entry = section["int8"][key] if int8 else section["bf16"] if bf16 else section["fp32"]
    return export.folder / names[-2 if int8 else 0], {"export": export, "key": key, **entry}


def _add_openvino(export: Export, kind: ModelKind, key: str | None, calibration: Any, *, bf16: bool = False) -> Export:
    """Add the plain fp32 graph (when missing), with ``bf16`` its bfloat16 parity record, and with a ``key``
    the int8 IR calibrated on ``calibration``."""
    import functools

    import openvino

    from rankwise.retrieval.backend.build import check_parity
    from rankwise.retrieval.backend.openvino import OpenVinoModel, feeds_of, plain_graph, quantize_int8, require

    prepared = kind.prepare(export.manifest["model"], export.manifest["options"].get("max_length"))
    with atomic_dir(export.folder, wait=True, what="ONNX export") as tmp:
        manifest = json.loads((export.folder / MANIFEST).read_text(encoding="utf-8"))  # as it is now, under the lock
        fields = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "created", "versions")}
        section = fields.setdefault("openvino", {"int8": {}})
        _link_files(export.folder, tmp, fields["files"])
        added: list[str] = []
        if "fp32" not in section:
            plain, added = plain_graph(prepared, tmp, fused=bool(fields.get("fused")))
            section["fp32"] = {"graph": plain.name,
                               "parity": check_parity(prepared, plain, OPENVINO, runtime=OpenVinoModel)}
        section["versions"] = {**section.get("versions", {}), "openvino": openvino.__version__}
        if bf16 and "bf16" not in section:
            graph = section["fp32"]["graph"]
            section["bf16"] = {"graph": graph, "parity": check_parity(
                prepared, tmp / graph, OPENVINO_BF16, runtime=functools.partial(OpenVinoModel, bf16=True))}
        if key is not None and key not in section["int8"]:
            feeds = feeds_of(prepared.tokenizer, calibration, fields["settings"].get("max_length"))
            files = quantize_int8(tmp / section["fp32"]["graph"], tmp, key, feeds)
            record = check_parity(prepared, tmp / files[0], OPENVINO_INT8, runtime=OpenVinoModel)
            section["int8"][key] = {"files": files, "calibration": {"items": len(feeds), "sha256_12": key},
                                    "parity": record}
            section["versions"]["nncf"] = require("nncf").__version__
            added += files
        fields["files"] = list(fields["files"]) + added
        written = _write_manifest(tmp, fields)
    return Export(export.folder, written.manifest)
