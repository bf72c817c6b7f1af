"""The package as published: one ``rankwise`` namespace, its data and licence, ranged dependencies.

The wheel tests build it with ``pip wheel . --no-deps`` and install it into a fresh virtual
environment on top of this one's site-packages, then run it from a folder holding its own
``eval/`` and ``training/`` packages (as most ML projects do) that must never be imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
FOLDERS = ("retrieval", "rerank", "training", "eval", "rankwise")


def _package_names() -> set[str]:
    """Every folder with an ``__init__.py`` under the top-level folders, by the name it installs as."""
    names = set()
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            names.add(".".join(parts if folder == "rankwise" else ("rankwise", *parts)))
    return names


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert _package_names() - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - _package_names() == set()
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {
        "rankwise": "rankwise", "rankwise.retrieval": "retrieval", "rankwise.rerank": "rerank",
        "rankwise.training": "training", "rankwise.eval": "eval"}


def test_dependencies_are_ranges_and_constraints_pin_each_of_them():
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values()
                                                    for r in extra]
    assert not [r for r in requirements if "==" in r]
    assert {"bm25", "onnx", "llm", "train", "experiments", "serve", "gpu", "test", "all"} <= set(
        project["optional-dependencies"])
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    from packaging.requirements import Requirement

    for line in requirements:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in ("rankwise", "faiss-gpu"):  # the 'all' extra; the GPU build is not part of the tested set
            continue
        assert name in pins, f"{name} is not in constraints.txt: python .ci/lock.py > constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt's {name}=={pins[name]} is outside {line}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what a release holds (setuptools writes build/ beside the sources)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (found,) = out.glob("rankwise-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_only_the_rankwise_namespace_its_data_and_licence(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    version = PYPROJECT["project"]["version"]
    assert {n.split("/")[0] for n in names} == {"rankwise", f"rankwise-{version}.dist-info"}
    assert {"rankwise/py.typed", "rankwise/retrieval/backend/data/calibration.jsonl", "rankwise/eval/irds.py",
            f"rankwise-{version}.dist-info/licenses/LICENSE"} <= set(names)
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/") or "__pycache__" in n]
    metadata = zipfile.ZipFile(wheel).read(f"rankwise-{version}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.11" in metadata and "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert not re.search(r"^Requires-Dist: [^;]*==", metadata, re.M)
    licence = zipfile.ZipFile(wheel).read(f"rankwise-{version}.dist-info/licenses/LICENSE").decode()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence


@pytest.mark.slow
def test_the_installed_wheel_runs_beside_a_project_with_its_own_eval_and_training(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "project"  # a user's project: its own eval/ and training/ packages
    for name in ("eval", "training", "retrieval", "rerank"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"raise RuntimeError('the project\\'s own {name} was imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = ("import rankwise, sys; rankwise.retrieval; rankwise.eval.evaluate; rankwise.training.TrainSettings; "
             "assert 'eval' not in sys.modules and 'training' not in sys.modules; "
             "assert rankwise.__file__.startswith(sys.prefix), rankwise.__file__; print(rankwise.__version__)")
    proc = subprocess.run([str(python), "-c", check], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == PYPROJECT["project"]["version"]
    for command in ([str(venv / "bin" / "rankwise"), "--help"], [str(python), "-m", "rankwise", "--help"]):
        proc = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "rerank" in proc.stdout and "beir" in proc.stdout
