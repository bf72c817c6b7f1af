"""Optional dependencies: each lives in a pip extra, and a missing one is named in one line.

The base install (``pip install rankwise``) is what dense retrieval and reranking from Python need.
BM25, the ONNX and OpenVINO backends, GGUF models and LoRA, training, comparisons and ``irds:`` datasets, and the
server each need an extra (``pip install "rankwise[bm25]"``). Every import of such a package goes
through :func:`requires`, inside the function that needs it (or at the top of a module that is
that feature and nothing else: the server's app, comparisons, the trainers), so ``import
rankwise.rerank`` works without any extra and the command that needs one ends with exit status 2
and one line::

    rankwise: error: BM25 needs the 'bm25' extra: pip install "rankwise[bm25]"
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rankwise.retrieval.errors import InputError

class MissingExtraError(InputError):
    """An optional package is not installed; the message names the extra that provides it."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(f"{feature} needs the {extra!r} extra: pip install \"rankwise[{extra}]\"")


def requires(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (a package of ``extra``), or raise :class:`MissingExtraError` naming the extra.

    ``feature`` is what the caller is doing, as the start of a sentence: ``"BM25"``,
    ``"The ONNX backend"``. A module that is installed but fails to import for another reason
    (a broken native library) raises its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        # the module itself, or a package it needs, is missing: the extra is not (fully) installed
        raise MissingExtraError(feature, extra, err.name or module) from None


def require_installed(module: str, extra: str, feature: str) -> None:
    """Like :func:`requires`, for a package that must be present but not imported (pyserini's jars)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or hidden (None in sys.modules)
        found = False
    if not found:
        raise MissingExtraError(feature, extra, module)
