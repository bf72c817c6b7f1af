"""The README's Python example runs as written (on a small folder and a tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

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
