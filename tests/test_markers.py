"""Every test that starts a process (a subprocess, torchrun, a killed run) is marked ``slow``, so that
``python -m pytest -q -m "not slow"`` stays the quick pass."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
STARTS_A_PROCESS = re.compile(r"subprocess\.(run|call|check_call|check_output)\(|Popen\(|kill_when\(|sys\.executable|"
                              r"torch\.distributed\.run")
# a subprocess of the standard library alone, a tenth of a second
QUICK = {"test_docs.py::test_benchmarks_scores_are_what_bench_reproduce_writes"}


def unmarked_process_tests(path: Path) -> list[str]:
    """The tests of ``path`` that start a process (themselves or through a function of the same file), unmarked."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    if re.search(r"^pytestmark = .*slow", source, re.MULTILINE):
        return []
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}

    def starts(node: ast.FunctionDef, seen: frozenset[str] = frozenset()) -> bool:
        if STARTS_A_PROCESS.search(ast.get_source_segment(source, node) or ""):
            return True
        called = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        return any(starts(functions[name], seen | {node.name}) for name in called
                   if name in functions and name not in seen and name != node.name)

    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            slow = any("slow" in (ast.get_source_segment(source, d) or "") for d in node.decorator_list)
            if not slow and starts(node) and f"{path.name}::{node.name}" not in QUICK:
                found.append(f"{path.name}:{node.lineno} {node.name}")
    return found


def test_every_test_that_starts_a_process_is_slow():
    missing = [line for path in sorted(TESTS.glob("test_*.py")) if path.name != Path(__file__).name
               for line in unmarked_process_tests(path)]
    assert not missing, "mark these @pytest.mark.slow:\n" + "\n".join(missing)


def test_the_finder_sees_a_process_started_through_a_helper(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import subprocess\n\ndef _run():\n    return subprocess.run(['true'])\n\n"
                      "def test_a():\n    _run()\n\n@pytest.mark.slow\ndef test_b():\n    _run()\n\n"
                      "def test_c():\n    assert True\n")
    assert unmarked_process_tests(sample) == ["test_sample.py:6 test_a"]
