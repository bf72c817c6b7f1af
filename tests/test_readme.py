"""The README's Python example runs as written (on a small folder and a tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, synthetic_beir, tiny_encoder):
    block = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    code = (block.replace('"scifact"', repr(str(synthetic_beir)))
                 .replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_encoder))))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "hybrid.trec").is_file()
    assert len(namespace["run"]) == 10
    assert (tmp_path / "idx" / "scifact-minilm" / "manifest.json").is_file()


def _block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [block] = [b for b in blocks if containing in b]
    return block


def test_every_readme_code_block_names_its_language():
    text = README.read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)$", text, re.M)
    assert fences and all(tag for tag in fences[0::2]), "an opening ``` without a language"


@pytest.mark.integration
def test_readme_pipeline_and_experiment_block_runs_on_cranfield(tmp_path, monkeypatch, tiny_encoder,
                                                               tiny_cross_encoder, capsys):
    """The README's BM25 >> cross-encoder pipeline and three-system experiment, on Cranfield (its 1,400
    documents, its first 30 judged queries: the tiny cross-encoder's word pieces make its pairs long) with
    tiny models."""
    import json

    from rankwise.retrieval.formats import read_qrels, read_queries
    from tests.conftest import require_shared, write_beir

    root = require_shared("cranfield")
    qrels = dict(list(read_qrels(root / "qrels" / "test.tsv").items())[:30])
    queries = read_queries(root / "queries.jsonl")
    docs = [json.loads(line) for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    folder = write_beir(tmp_path / "cranfield", docs, [{"_id": q, "text": queries[q]} for q in qrels],
                        [(q, d, g) for q, judged in qrels.items() for d, g in judged.items()])
    block = _block("Experiment(")
    assert len(block.strip().splitlines()) < 10
    code = (block.replace('"scifact"', repr(str(folder)))
                 .replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_encoder)))
                 .replace('"cross-encoder/ms-marco-MiniLM-L-6-v2"', repr(str(tiny_cross_encoder))))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert list(result.table.index) == ["bm25", "dense", "bm25+cross-encoder"]
    assert result.queries == 30 and 0.2 < result.table.loc["bm25", "nDCG@10"] < 0.7  # BM25: 0.35 on all 225
    assert result.systems["bm25+cross-encoder"].reused == ["bm25"]
    assert result.systems["bm25+cross-encoder"].stats["rerank"]["passages"] == 30 * 100
    assert "nDCG@10" in capsys.readouterr().out


def test_readme_rerank_block_continues_the_first(tmp_path, monkeypatch, synthetic_beir, tiny_encoder, tiny_causal_lm):
    first = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    rerank = _block("ListwiseReranker")
    assert rerank.startswith("# continues the first quickstart block")
    code = ((first + rerank).replace('"scifact"', repr(str(synthetic_beir)))
            .replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_encoder)))
            .replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(tiny_causal_lm))))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert sorted(i for i, _ in namespace["ranked"]) == [0, 1, 2]
    assert set(namespace["run2"]) == set(namespace["run"])
