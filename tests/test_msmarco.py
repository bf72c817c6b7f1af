"""MS MARCO and TREC DL: local MS MARCO folders, ir_datasets names (offline), official measures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from rankwise.eval.datasets import resolve_dataset
from rankwise.eval.irds import official_measures_for
from rankwise.eval.metrics import evaluate
from rankwise.eval.msmarco import MSMARCO_DEV_MEASURES, TREC_DL_MEASURES, MsMarcoFolder
from rankwise.retrieval.errors import InputError
from tests.conftest import ROOT

PASSAGES = {f"{i}": f"passage {i} about topic {i % 3}" for i in range(12)}


def _msmarco_folder(root, qrels_lines: list[str], queries: dict[str, str]):
    root.mkdir(parents=True, exist_ok=True)
    (root / "collection.tsv").write_text("".join(f"{pid}\t{text}\n" for pid, text in PASSAGES.items()))
    (root / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    (root / "qrels.tsv").write_text("".join(line + "\n" for line in qrels_lines))
    return root


def _log2(x: float) -> float:
    return math.log2(x)


def test_trec_dl_official_measures_match_hand_computed_values_with_the_rel_2_cutoff(tmp_path):
    # q1 graded 0-3; q2 has no passage of grade >= 2 (recall and AP at rel=2 are 0 there)
    folder = _msmarco_folder(tmp_path / "dl", ["1 0 1 3", "1 0 2 2", "1 0 3 1", "1 0 4 0", "1 0 5 2", "2 0 7 1"],
                             {"1": "first", "2": "second", "3": "unjudged"})
    dataset = resolve_dataset(str(folder), download=False)
    assert isinstance(dataset, MsMarcoFolder) and dataset.splits == ["test"]
    assert dataset.official_measures() == TREC_DL_MEASURES
    assert set(dataset.queries()) == {"1", "2"}
    run = {"1": {"3": 5.0, "1": 4.0, "4": 3.0, "6": 2.0, "2": 1.0}, "2": {"7": 1.0}}
    assert dataset.ignore_identical_ids is False  # query 1 and passage 1 are different things
    got = evaluate(run, dataset.qrels(), dataset.official_measures(), ignore_identical_ids=False)
    dcg = 1 / _log2(2) + 3 / _log2(3) + 2 / _log2(6)  # grades 1, 3, 0, (unjudged), 2 at ranks 1-5
    idcg = 3 / _log2(2) + 2 / _log2(3) + 2 / _log2(4) + 1 / _log2(5)
    assert got["nDCG@10"] == pytest.approx((dcg / idcg + 1.0) / 2, abs=1e-12)
    # rel >= 2: passages 1, 2, 5; 1 and 2 retrieved at ranks 2 and 5
    assert got["R(rel=2)@1000"] == pytest.approx((2 / 3 + 0.0) / 2, abs=1e-12)
    assert got["AP(rel=2)@1000"] == pytest.approx(((1 / 2 + 2 / 5) / 3 + 0.0) / 2, abs=1e-12)


def test_msmarco_dev_official_measure_is_rr_at_10_by_hand(tmp_path):
    folder = _msmarco_folder(tmp_path / "dev", ["1 0 1 1", "2 0 2 1", "3 0 3 1"], {"1": "a", "2": "b", "3": "c"})
    dataset = resolve_dataset(str(folder), download=False)
    assert dataset.official_measures() == MSMARCO_DEV_MEASURES == ("RR@10",)
    run = {"1": {"9": 3.0, "8": 2.0, "1": 1.0},  # relevant third: 1/3
           "2": {str(i): 20.0 - i for i in range(3, 13)} | {"2": 0.5},  # relevant 11th: 0
           "3": {"3": 1.0}}  # first: 1
    assert evaluate(run, dataset.qrels(), ["RR@10"], ignore_identical_ids=False)["RR@10"] == pytest.approx((1 / 3 + 0 + 1) / 3, abs=1e-12)


def test_msmarco_folder_splits_and_errors(tmp_path):
    folder = _msmarco_folder(tmp_path / "m", ["1 0 1 1"], {"1": "a"})
    (folder / "qrels.dev.tsv").write_text("2 0 2 1\n")
    (folder / "queries.dev.tsv").write_text("2\tdev query\n")
    dataset = resolve_dataset(str(folder), download=False)
    assert dataset.splits == ["dev", "test"] and dataset.queries("dev") == {"2": "dev query"}
    assert len(dataset.corpus) == len(PASSAGES)
    with pytest.raises(InputError, match="no qrels for split 'train'"):
        dataset.qrels("train")


def _register(tmp_path, *, qrels_url: str | None = None) -> str:
    """A small collection registered with ir_datasets, read from local files (or, for the qrels, a URL)."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import Download, LocalDownload, RequestsDownload

    (tmp_path / "docs.tsv").write_text("".join(f"{pid}\t{text}\n" for pid, text in PASSAGES.items()))
    (tmp_path / "queries.tsv").write_text("1\tpassage topic 1\n2\tpassage topic 2\n")
    (tmp_path / "qrels").write_text("1 0 1 2\n1 0 4 1\n2 0 2 3\n")
    qrels_source = (Download([RequestsDownload(qrels_url)], cache_path=str(tmp_path / "cached-qrels"))
                    if qrels_url else LocalDownload(tmp_path / "qrels"))
    name = f"rankwise-test/{uuid.uuid4().hex[:8]}/trec-dl-2019"
    ir_datasets.registry.register(name, Dataset(TsvDocs(LocalDownload(tmp_path / "docs.tsv")),
                                                TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
                                                TrecQrels(qrels_source, {})))
    return name


def test_a_registered_ir_datasets_collection_reads_offline_and_exports_its_documents_once(tmp_path):
    name = _register(tmp_path)
    dataset = resolve_dataset(f"irds:{name}")
    assert dataset.label == name and dataset.splits == ["test"]
    assert dataset.qrels() == {"1": {"1": 2, "4": 1}, "2": {"2": 3}}
    assert dataset.queries() == {"1": "passage topic 1", "2": "passage topic 2"}
    corpus = dataset.corpus
    assert [d.doc_id for d in corpus] == list(PASSAGES) and corpus.path.name == "corpus.jsonl"
    first = corpus.fingerprint
    assert dataset.corpus.fingerprint == first  # not exported again
    with pytest.raises(InputError, match="--split dev"):
        dataset.qrels("dev")


def test_an_uncached_ir_datasets_file_is_one_error_and_no_download(tmp_path):
    from ir_datasets.util import download

    name = _register(tmp_path, qrels_url="https://example.invalid/qrels.txt")
    with pytest.raises(InputError) as info:
        resolve_dataset(f"irds:{name}")
    message = str(info.value)
    assert "not cached" in message and "https://example.invalid/qrels.txt" in message and "\n" not in message
    assert not (tmp_path / "cached-qrels").exists()
    assert download.RequestsDownload.__dict__["__iter__"].__name__ == "__iter__"  # the guard is lifted
    with pytest.raises(InputError, match="unknown ir_datasets name"):
        resolve_dataset("irds:no-such/collection")


def test_with_the_network_allowed_an_uncached_ir_datasets_file_is_downloaded(tmp_path, monkeypatch):
    from ir_datasets.util import download

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RANKWISE_OFFLINE", raising=False)
    fetched = []

    def serve_fixture(self):  # the network, played by a local file
        fetched.append(self.url)
        yield (tmp_path / "qrels").read_bytes()

    monkeypatch.setattr(download.RequestsDownload, "__iter__", serve_fixture)
    name = _register(tmp_path, qrels_url="https://example.invalid/qrels.txt")
    dataset = resolve_dataset(f"irds:{name}")
    assert dataset.qrels() == {"1": {"1": 2, "4": 1}, "2": {"2": 3}}
    assert fetched == ["https://example.invalid/qrels.txt"]  # once: then read from ir_datasets' cache
    assert (tmp_path / "cached-qrels").read_bytes() == (tmp_path / "qrels").read_bytes()


def test_rankwise_offline_alone_switches_ir_datasets_downloads_off(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RANKWISE_OFFLINE", "1")
    name = _register(tmp_path, qrels_url="https://example.invalid/qrels.txt")
    with pytest.raises(InputError, match="downloads are off") as info:
        resolve_dataset(f"irds:{name}")
    assert "https://example.invalid/qrels.txt" in str(info.value)
    assert not (tmp_path / "cached-qrels").exists()


def test_official_measures_of_ir_datasets_names():
    assert official_measures_for("msmarco-passage/trec-dl-2019/judged") == TREC_DL_MEASURES
    assert official_measures_for("msmarco-passage/trec-dl-2020") == TREC_DL_MEASURES
    assert official_measures_for("msmarco-passage/dev/small") == ("RR@10",)
    assert official_measures_for("beir/scifact/test")[0] == "nDCG@10"


_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    home = Path(os.environ["IR_DATASETS_HOME"]) / "msmarco-passage"
    (home / "trec-dl-2019").mkdir(parents=True)
    (home / "irds_version.txt").write_text("v2")
    (home / "collection.tsv").write_text("".join(f"{i}\\tpassage number {i}\\n" for i in range(10)))
    (home / "trec-dl-2019" / "queries.tsv").write_text("100\\tpassage number 3\\n101\\tnumber 5\\n102\\tunjudged\\n")
    (home / "trec-dl-2019" / "qrels").write_text("100 Q0 3 3\\n100 Q0 4 1\\n101 Q0 5 2\\n101 Q0 6 0\\n")
    Path("run.trec").write_text("100 Q0 3 1 2.0 r\\n100 Q0 4 2 1.0 r\\n101 Q0 6 1 2.0 r\\n101 Q0 5 2 1.0 r\\n")
    from rankwise.eval.datasets import resolve_dataset
    from rankwise.cli import main
    dataset = resolve_dataset("irds:msmarco-passage/trec-dl-2019/judged")
    out = {"label": dataset.label, "name": dataset.name, "queries": dataset.queries(),
           "measures": list(dataset.official_measures()), "docs": len(dataset.corpus)}
    codes = []
    for args in (["compare", "run.trec", "--qrels", "irds:msmarco-passage/trec-dl-2019/judged", "--format", "json"],
                 ["compare", "run.trec", "--qrels", "irds:msmarco-passage/dev/small"]):
        try:
            main(args)
            codes.append(0)
        except SystemExit as exit_info:
            codes.append(exit_info.code)
    out["codes"] = codes
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_trec_dl_by_its_ir_datasets_name_from_files_laid_out_as_ir_datasets_reads_them(tmp_path):
    env = {**os.environ, "IR_DATASETS_HOME": str(tmp_path / "irds"), "RANKWISE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    assert result["label"] == "msmarco-passage/trec-dl-2019/judged" and result["name"] == "msmarco-passage"
    assert result["queries"] == {"100": "passage number 3", "101": "number 5"}  # judged only
    assert result["measures"] == list(TREC_DL_MEASURES) and result["docs"] == 10
    assert result["codes"] == [0, 2]
    table = json.loads(next(line for line in lines if line.startswith("{")))
    row = table["systems"][0]
    # query 100: grades 3, 1 at ranks 1-2 (ideal); query 101: grades 0, 2 -> (2 / log2 3) / 2
    assert row["nDCG@10"] == pytest.approx((1.0 + (2 / math.log2(3)) / 2) / 2, abs=5e-7)  # --json: 6 digits
    assert row["R(rel=2)@1000"] == pytest.approx(1.0) and row["AP(rel=2)@1000"] == pytest.approx((1 + 0.5) / 2)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rankwise: error:")]
    assert len(errors) == 1 and "'msmarco-passage/dev/small'" in errors[0] and "not cached" in errors[0], proc.stderr
    assert not any((tmp_path / "irds" / "msmarco-passage").glob("*.tar.gz*"))  # nothing downloaded
