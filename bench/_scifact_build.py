"""Shared by the SciFact stand-in builders: read SciFact's test claims, qrels and corpus; write a folder atomically."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rankwise.retrieval.formats import Corpus, read_qrels, read_queries  # noqa: E402


def scifact_folder(name: str = "scifact") -> Path:
    """The SciFact BEIR folder: a path, or ``$RANKWISE_DATA/<name>``."""
    from rankwise.eval.datasets import resolve_dataset

    return Path(resolve_dataset(name, download=False).root)


def load(folder: Path, split: str = "test") -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, dict]]:
    """Claims judged in ``split``, their qrels, and every document as a BEIR corpus object."""
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = {q: t for q, t in read_queries(folder / "queries.jsonl").items() if q in qrels}
    docs = {d.doc_id: {"_id": d.doc_id, "title": d.title, "text": d.text} for d in Corpus(folder)}
    return queries, qrels, docs


def write_folder(out: Path, fill: Callable[[Path], None]) -> None:
    """Build the folder in a temporary sibling, then rename it onto ``out`` (replacing an old one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(work)
        if out.exists():
            shutil.rmtree(out)
        os.rename(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
