"""eval.datasets: resolution order, the offline mirror, and safe, atomic, verified downloads."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path

import pytest

import rankwise.eval.datasets as ds
from rankwise.eval.datasets import BEIR_DATASETS, BeirSource, resolve_dataset
from rankwise.retrieval.errors import InputError

REAL_MIRROR = Path("/work/shared/data/beir")

QUERIES = {"q1": "first query", "q2": "second query", "q3": "third query"}
QRELS = {"test": [("q1", "d1", 1), ("q3", "d2", 2)], "train": [("q2", "d3", 1)]}
CORPUS = [("d1", "Title one", "text one"), ("d2", "", "text two"), ("d3", "T3", "text three")]


def beir_files(queries=QUERIES, qrels=QRELS, corpus=CORPUS) -> dict[str, str]:
    """The files of a small BEIR dataset, relative path -> content."""
    files = {
        "corpus.jsonl": "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in corpus),
        "queries.jsonl": "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()),
    }
    for split, rows in qrels.items():
        files[f"qrels/{split}.tsv"] = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
    return files


def write_beir(root: Path, **kwargs) -> Path:
    for rel, text in beir_files(**kwargs).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def zip_bytes(members: dict[str, str], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)  # S_IFLNK
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def dataset_zip(name: str, **kwargs) -> bytes:
    """A zip laid out like BEIR's: everything under a top-level ``<name>/`` folder."""
    return zip_bytes({f"{name}/{rel}": text for rel, text in beir_files(**kwargs).items()})


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("RANKWISE_DATA", "RANKWISE_BEIR_URL", "http_proxy", "HTTP_PROXY", "https_proxy",
                "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A static HTTP server on 127.0.0.1 serving ``<tmp>/served``; RANKWISE_BEIR_URL points at it."""
    served = tmp_path / "served"
    served.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("RANKWISE_BEIR_URL", f"http://127.0.0.1:{httpd.server_address[1]}/beir/")
    (served / "beir").mkdir()

    def publish(name: str, data: bytes, md5: str | None = None) -> None:
        (served / "beir" / f"{name}.zip").write_bytes(data)
        checksum = md5 or hashlib.md5(data).hexdigest()
        monkeypatch.setitem(BEIR_DATASETS, name, BeirSource(f"https://example.invalid/{name}.zip", checksum))

    publish.hits = hits
    try:
        yield publish
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ------------------------------------------------------------------ local folders and the mirror


def test_local_folder(tmp_path):
    root = write_beir(tmp_path / "mini")
    d = resolve_dataset(str(root), download=False)
    assert d.name == "mini" and d.root == root
    assert [doc.doc_id for doc in d.corpus] == ["d1", "d2", "d3"]
    assert d.splits == ["test", "train"]
    assert d.qrels("test") == {"q1": {"d1": 1}, "q3": {"d2": 2}}


def test_folder_that_is_not_beir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing corpus.jsonl, queries.jsonl, qrels/"):
        resolve_dataset(tmp_path / "empty")


def test_queries_are_restricted_to_judged_ones(tmp_path):
    d = resolve_dataset(write_beir(tmp_path / "mini"))
    assert d.queries() == {"q1": "first query", "q3": "third query"}
    assert d.queries("train") == {"q2": "second query"}


def test_judged_query_without_text_is_an_error(tmp_path):
    root = write_beir(tmp_path / "mini", qrels={"test": [("q1", "d1", 1), ("q7", "d2", 1)]})
    with pytest.raises(InputError, match="'q7'"):
        resolve_dataset(root).queries()


def test_missing_qrels_split_names_the_file(tmp_path):
    d = resolve_dataset(write_beir(tmp_path / "mini"))
    with pytest.raises(InputError) as info:
        d.qrels("dev")
    assert str(tmp_path / "mini" / "qrels" / "dev.tsv") in str(info.value)
    assert "test, train" in str(info.value)
    with pytest.raises(InputError, match="dev.tsv"):
        d.queries("dev")


def test_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_beir(mirror / "mini")
    monkeypatch.setenv("RANKWISE_DATA", str(mirror))
    d = resolve_dataset("mini", cache_dir=tmp_path / "cache", download=False)
    assert d.name == "mini" and d.root == mirror / "mini"


def test_mirror_comes_before_download(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_beir(mirror / "scifact")
    monkeypatch.setenv("RANKWISE_DATA", str(mirror))
    monkeypatch.setenv("RANKWISE_BEIR_URL", "http://127.0.0.1:9/unreachable")
    d = resolve_dataset("scifact", cache_dir=tmp_path / "cache")
    assert d.root == mirror / "scifact"
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(not (REAL_MIRROR / "scifact").is_dir(), reason="no offline BEIR mirror here")
def test_real_mirror_scifact(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKWISE_DATA", str(REAL_MIRROR))
    d = resolve_dataset("scifact", cache_dir=tmp_path / "cache", download=False)
    assert d.root == REAL_MIRROR / "scifact"
    queries = d.queries("test")
    assert len(queries) == 300
    assert set(queries) == set(d.qrels("test"))
    assert "train" in d.splits


def test_unknown_name(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_beir(mirror / "mini")
    monkeypatch.setenv("RANKWISE_DATA", str(mirror))
    with pytest.raises(InputError) as info:
        resolve_dataset("no-such-set", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "'no-such-set'" in message
    assert str(mirror) in message and "mini" in message
    assert "scifact" in message and "trec-covid" in message
    assert not (tmp_path / "cache").exists()


def test_unknown_name_without_mirror_and_undistributed(tmp_path):
    with pytest.raises(InputError, match="RANKWISE_DATA is not set"):
        resolve_dataset("no-such-set", cache_dir=tmp_path / "cache")
    with pytest.raises(InputError, match="does not distribute"):
        resolve_dataset("robust04", cache_dir=tmp_path / "cache")


def test_path_like_names_never_reach_the_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_beir(tmp_path / "outside")
    monkeypatch.setenv("RANKWISE_DATA", str(mirror))
    with pytest.raises(InputError, match="unknown dataset"):
        resolve_dataset("../outside", cache_dir=tmp_path / "cache")


def test_registry_holds_the_published_checksums():
    assert {"scifact", "nfcorpus", "trec-covid", "msmarco", "arguana", "fiqa"} <= set(BEIR_DATASETS)
    assert BEIR_DATASETS["scifact"].md5 == "5f7d1de60b170fc8027bb7898e2efca1"
    for name, source in BEIR_DATASETS.items():
        assert re.fullmatch(r"[0-9a-f]{32}", source.md5), name
        assert source.url == f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def test_download_off_does_not_fetch(tmp_path):
    with pytest.raises(InputError, match="not downloaded"):
        resolve_dataset("scifact", cache_dir=tmp_path / "cache", download=False)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "c"))
    assert ds.default_cache_dir() == tmp_path / "c" / "datasets"


# ------------------------------------------------------------------------------------- download


def test_download_verify_extract_and_cache(server, tmp_path, capsys):
    server("tiny", dataset_zip("tiny"))
    cache = tmp_path / "cache"
    d = resolve_dataset("tiny", cache_dir=cache, progress=True)
    assert d.name == "tiny" and d.root == cache / "tiny"
    assert d.queries() == {"q1": "first query", "q3": "third query"}
    assert cache_entries(cache) == ["tiny"]  # no zip, no work folder left
    record = json.loads((d.root / ".rankwise-source.json").read_text())
    assert record["md5"] == BEIR_DATASETS["tiny"].md5 and record["url"].endswith("/beir/tiny.zip")
    assert "tiny.zip" in capsys.readouterr().err  # the progress bar went to stderr
    assert server.hits == ["/beir/tiny.zip"]
    again = resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert again.root == d.root and server.hits == ["/beir/tiny.zip"]  # served from the cache


def test_download_into_default_cache(server, tmp_path):
    server("tiny", dataset_zip("tiny"))
    d = resolve_dataset("tiny", progress=False)
    assert d.root == tmp_path / "default-cache" / "datasets" / "tiny"


def test_zip_without_top_level_folder(server, tmp_path):
    server("flat", zip_bytes(beir_files()))
    d = resolve_dataset("flat", cache_dir=tmp_path / "cache", progress=False)
    assert d.splits == ["test", "train"]


def test_md5_mismatch_is_refused_and_nothing_is_cached(server, tmp_path):
    server("tiny", dataset_zip("tiny"), md5="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="checksum mismatch") as info:
        resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert "0" * 32 in str(info.value)
    assert cache_entries(cache) == []


@pytest.mark.parametrize(
    ("member", "symlink", "why"),
    [
        ("tiny/../../evil.txt", None, "'..'"),
        ("../evil.txt", None, "'..'"),
        ("/tmp/rankwise-evil.txt", None, "absolute"),
        ("C:/evil.txt", None, "absolute"),
        (None, "tiny/link", "symbolic link"),
    ],
)
def test_unsafe_archive_is_refused(server, tmp_path, member, symlink, why):
    members = {f"tiny/{rel}": text for rel, text in beir_files().items()}
    if member:
        members[member] = "pwned"
    server("tiny", zip_bytes(members, symlink=symlink))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=f"refusing to extract.*{re.escape(why)}"):
        resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert cache_entries(cache) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/rankwise-evil.txt").exists()


def test_archive_that_is_not_a_dataset_is_not_cached(server, tmp_path):
    server("tiny", zip_bytes({"tiny/readme.txt": "hello"}))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="not a BEIR dataset folder"):
        resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert cache_entries(cache) == []


def test_http_error(server, tmp_path, monkeypatch):
    monkeypatch.setitem(BEIR_DATASETS, "absent", BeirSource("https://example.invalid/absent.zip", "0" * 32))
    with pytest.raises(InputError, match="HTTP 404"):
        resolve_dataset("absent", cache_dir=tmp_path / "cache", progress=False)
    assert cache_entries(tmp_path / "cache") == []


def test_broken_cache_entry_is_reported(tmp_path):
    (tmp_path / "cache" / "scifact").mkdir(parents=True)
    with pytest.raises(InputError, match="delete it to download again"):
        resolve_dataset("scifact", cache_dir=tmp_path / "cache")


def test_interrupted_extraction_leaves_nothing_and_rerun_succeeds(server, tmp_path, monkeypatch):
    server("tiny", dataset_zip("tiny"))
    cache = tmp_path / "cache"
    real = ds._dataset_root

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C once the archive is unpacked, before the rename

    monkeypatch.setattr(ds, "_dataset_root", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert cache_entries(cache) == []
    monkeypatch.setattr(ds, "_dataset_root", real)
    assert resolve_dataset("tiny", cache_dir=cache, progress=False).queries()


def test_leftovers_of_a_killed_download_are_cleaned(server, tmp_path):
    server("tiny", dataset_zip("tiny"))
    cache = tmp_path / "cache"
    stale = cache / f".tiny.{2**22 + 12345}.abcd.partial"  # a pid above Linux's pid_max: not running
    (stale / "unpacked" / "tiny").mkdir(parents=True)
    (stale / "tiny.zip").write_bytes(b"half a zip")
    live = cache / f".tiny.{os.getpid()}.efgh.partial"  # our own pid: left alone
    live.mkdir()
    resolve_dataset("tiny", cache_dir=cache, progress=False)
    assert cache_entries(cache) == [live.name, "tiny"]


def test_cqadupstack_forums(server, tmp_path):
    members = {}
    for forum in ("android", "gis"):
        members.update({f"cqadupstack/{forum}/{rel}": text for rel, text in beir_files().items()})
    server("cqadupstack", zip_bytes(members))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="cqadupstack/<forum>"):
        resolve_dataset("cqadupstack", cache_dir=cache, progress=False)
    d = resolve_dataset("cqadupstack/android", cache_dir=cache, progress=False)
    assert d.name == "cqadupstack/android" and d.root == cache / "cqadupstack" / "android"
    assert d.queries() == {"q1": "first query", "q3": "third query"}
    with pytest.raises(InputError, match="no forum 'tex'.*android, gis"):
        resolve_dataset("cqadupstack/tex", cache_dir=cache, progress=False)
    with pytest.raises(InputError, match="one forum folder"):
        resolve_dataset(cache / "cqadupstack")
