"""Write constraints.txt: the exact versions installed here of rankwise's dependency closure.

    python .ci/lock.py [EXTRAS] > constraints.txt      # EXTRAS default: all,test

Reads pyproject.toml's dependencies and the named extras, follows every requirement (with its own
extras, markers evaluated for this machine) through the installed distributions' metadata, and
prints ``name==version`` for each, sorted. CI installs with ``-c constraints.txt``, so a run
resolves to exactly the set the suite was last green with. Fails if a requirement is not installed
or its installed version is outside the declared range.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _version(name: str) -> str:
    version = metadata.version(name)
    return version.split("+", 1)[0]  # torch's "+cpu": the CPU wheel is chosen by installing it first


def closure(requirements: list[str], own: str) -> dict[str, str]:
    """``{canonical name: installed version}`` for ``requirements`` and all they need, transitively."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    problems: list[str] = []
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name == own:  # rankwise[...] inside rankwise's own extras
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        version = _version(req.name)
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name} {version} is installed, outside {req}")
        pinned[name] = version
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for line in dist.requires or []:
            child = Requirement(line)
            # a child's marker is read here, where the extras asked of its parent are known
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(Requirement(re.sub(r";.*", "", line)))
    if problems:
        sys.exit("lock: " + "; ".join(sorted(set(problems))))
    return pinned


def main() -> None:
    extras = (sys.argv[1] if len(sys.argv) > 1 else "all,test").split(",")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    own = canonicalize_name(project["name"])
    requirements = list(project["dependencies"])
    todo, done = list(extras), set()
    while todo:  # an extra may name others: all = rankwise[bm25,onnx,...]
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == own:
                todo.extend(req.extras)
            else:
                requirements.append(line)
    pinned = closure(requirements, own)
    print(f"# rankwise's tested dependency set ({','.join(extras)}), from `python .ci/lock.py {','.join(extras)}`;")
    print("# CI installs with `pip install -c constraints.txt`. torch is the CPU wheel, installed first.")
    for name in sorted(pinned):
        print(f"{name}=={pinned[name]}")


if __name__ == "__main__":
    main()
