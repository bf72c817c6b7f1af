"""What a results file needs to be regenerated: versions, git revision, the exact command, models.

``results.json`` carries :func:`provenance` under ``"provenance"``; each system's models are
recorded beside its metrics with :func:`model_fingerprint` (encoders by the fingerprint their
indexes are keyed by; other models by the SHA-256 of their files).
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from rankwise.retrieval.files import tree_fingerprint
from rankwise.retrieval.models import resolve_model

PACKAGES = ("torch", "sentence-transformers", "transformers", "tokenizers", "numpy", "faiss-cpu", "faiss-gpu",
            "pyserini", "ir-measures", "pytrec-eval-terrier", "onnxruntime", "scipy", "pandas", "statsmodels",
            "ir_datasets", "matplotlib")
_ROOT = Path(__file__).resolve().parent.parent


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """rankwise's version, the git revision of its source (and whether it had local changes), the
    versions of the packages that shape the numbers, Python and platform, the command and the time."""
    return {
        "rankwise": _version("rankwise") or _package_version(),
        "git": git_revision(),
        "packages": {name: v for name in PACKAGES if (v := _version(name))},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": command_line(argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``rankwise ...`` for the console script and ``python -m rankwise``."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else ""
    if program == "rankwise" or (program == "__main__.py" and Path(argv[0]).parent.name == "rankwise"):
        return shlex.join(["rankwise", *argv[1:]])
    return shlex.join(argv)


def git_revision(root: Path = _ROOT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout rankwise runs from, or None outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None


def model_fingerprint(model: Any) -> str | None:
    """An encoder's own fingerprint, else the SHA-256 of a model's files (a folder or one file);
    None for a hub name that is not on disk."""
    fingerprint = getattr(model, "fingerprint", None)
    if isinstance(fingerprint, str):
        return fingerprint
    path = Path(resolve_model(str(model)))
    return tree_fingerprint(path) if path.exists() else None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _package_version() -> str:
    """The version pyproject.toml names, for a source checkout that is not installed (``rankwise/__init__``
    says the same; reading it here keeps this lower layer from importing the top one)."""
    import re

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    found = re.search(r'^version = "([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M) if pyproject.is_file() else None
    return found.group(1) if found else "unknown"
