"""Every module imports, the import graph has no cycle, and no lower layer imports a higher one.

Layers, lowest first: retrieval <- rerank <- training <- eval <- rankwise. The graph is read with
``ast`` from every ``import`` statement (at module level or inside functions, guarded by
``TYPE_CHECKING`` or not), so a lazy import cannot hide a cycle or a layer violation.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("retrieval", "rerank", "training", "eval", "rankwise")


def _modules() -> dict[str, Path]:
    """``rankwise.retrieval.index -> retrieval/index.py``: each top-level folder installs under ``rankwise``."""
    found = {}
    for package in LAYERS:
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join(parts if package == "rankwise" else ("rankwise", *parts))] = file
    return found


def layer(module: str) -> str:
    """The layer a module belongs to: ``rankwise.rerank.x`` is rerank, ``rankwise.cli`` the front door."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "rankwise"


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lands in (``a.b.c`` may be a module or a name in ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """``module -> the project modules it imports`` (a package's ``__init__`` counts for ``from pkg import x``)."""
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets.update(f"{base}.{a.name}" for a in node.names)
                targets.add(base)
        graph[name] = {t for t in map(_resolve, targets) if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, three colours).

    A package importing its own submodules (``rerank/__init__`` re-exporting ``rankwise.rerank.llm``) is the
    package's interface, not a cycle: edges from a module to its own package are left out.
    """
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walk_finds_a_cycle_and_ignores_package_interfaces():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_lower_layer_imports_a_higher_one():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if rank[layer(b)] > rank[layer(a)])
    assert wrong == []


# Where the ONNX / OpenVINO code of each model kind lives: the encoder's and the cross-encoder's in
# retrieval/backend/, the causal LM's in rerank/onnx/ (the layer that owns the model); no other module
# reaches the ONNX or OpenVINO packages.
RUNTIME_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "openvino", "nncf")
KIND_HOMES = {"causal": "rerank/onnx/", "encoder": "retrieval/backend/"}  # a kind's marker -> its one home


def _runtime_uses(tree: ast.AST) -> set[str]:
    """The ONNX / OpenVINO packages a module imports or asks for (``requires("onnx", ...)``, ``require("nncf")``)."""
    used = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("requires", "require")
              and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        used |= {n.split(".")[0] for n in names if n.split(".")[0] in RUNTIME_PACKAGES}
    return used


def _defined_names(tree: ast.Module) -> set[str]:
    """The module-level functions, classes and constants a module defines."""
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found |= {t.id for t in targets if isinstance(t, ast.Name)}
    return found


def _relative(file: Path) -> str:
    return file.relative_to(ROOT).as_posix()


def test_the_rule_checks_find_what_they_look_for():
    assert _runtime_uses(ast.parse("import onnxruntime as ort\nfrom openvino import Core\nrequires('nncf', 'x')")) \
        == {"onnxruntime", "openvino", "nncf"}
    assert _runtime_uses(ast.parse("import numpy\nfrom .onnx import x\nrequires('faiss', 'x')")) == set()
    assert _defined_names(ast.parse("class CausalLMGraph: pass\nOP_TYPES = ()\ndef f(): pass")) == \
        {"CausalLMGraph", "OP_TYPES", "f"}


def test_only_the_backend_packages_reach_onnx_and_openvino():
    homes = tuple(KIND_HOMES.values())
    wrong = sorted(f"{_relative(f)}: {', '.join(sorted(used))}" for f in MODULES.values()
                   if (used := _runtime_uses(ast.parse(f.read_text(encoding="utf-8"))))
                   and not _relative(f).startswith(homes))
    assert wrong == []


def test_each_model_kind_has_its_onnx_code_in_one_place():
    """retrieval/backend/ defines nothing of the causal LM, rerank/onnx/ nothing of the encoders."""
    wrong = []
    for file in MODULES.values():
        where = _relative(file)
        for marker, home in KIND_HOMES.items():
            other = next(h for h in KIND_HOMES.values() if h != home)
            if where.startswith(other):
                wrong += [f"{where}: {name}" for name in sorted(_defined_names(ast.parse(file.read_text(encoding="utf-8"))))
                          if marker in name.lower()]
    assert wrong == []
    graph = import_graph()
    assert "rankwise.retrieval.encoder" not in graph["rankwise.retrieval.backend.build"]


def test_nothing_registers_on_import():
    """A model kind is an object passed explicitly, never added to a table when some module is imported: at
    module level, retrieval/ and rerank/ call only the optional-dependency checks."""
    allowed = {"requires", "require_training"}
    wrong = []
    for file in MODULES.values():
        if not _relative(file).startswith(("retrieval/", "rerank/")):
            continue
        for node in ast.parse(file.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                func = node.value.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name not in allowed:
                    wrong.append(f"{_relative(file)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)
