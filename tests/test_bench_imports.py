"""Every ``rankwise`` name a bench script imports exists (the scripts import inside ``main``, so a
renamed module would otherwise surface only when someone runs the benchmark)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _imports(file: Path) -> list[tuple[str, str | None, int]]:
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rankwise" and not node.level:
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.split(".")[0] == "rankwise"]
    return found


def test_the_check_sees_a_missing_module_and_a_missing_name(tmp_path):
    sample = tmp_path / "b.py"
    sample.write_text("def main():\n    from rankwise.eval.pipeline import bm25_index\n"
                      "    from rankwise.retrieval.cached import no_such_name\n")
    assert [m for m, _, _ in _imports(sample)] == ["rankwise.eval.pipeline", "rankwise.retrieval.cached"]
    assert _problems(sample) == ["b.py:2: rankwise.eval.pipeline", "b.py:3: rankwise.retrieval.cached.no_such_name"]


def _problems(file: Path) -> list[str]:
    problems = []
    for module, name, line in _imports(file):
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and err.name.split(".")[0] == "rankwise":
                problems.append(f"{file.name}:{line}: {module}")
                continue
            raise
        if name is not None and name != "*" and not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                problems.append(f"{file.name}:{line}: {module}.{name}")
    return problems


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_imports_exist(script):
    assert _problems(BENCH / script) == []
