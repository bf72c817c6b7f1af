"""Shared fixtures: hermetic settings, tiny models, small corpora, and the real data when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The offline mirrors: ../shared's BEIR folders and the models fetched by the README's set-up command.
if not os.environ.get("RANKWISE_DATA") and (SHARED / "data" / "beir").is_dir():
    os.environ["RANKWISE_DATA"] = str(SHARED / "data" / "beir")
if not os.environ.get("RANKWISE_MODELS") and (Path.home() / ".cache" / "rankwise" / "models").is_dir():
    os.environ["RANKWISE_MODELS"] = str(Path.home() / ".cache" / "rankwise" / "models")
SHARED_BEIR = Path(os.environ.get("RANKWISE_DATA", SHARED / "data" / "beir"))
MODELS = Path(os.environ["RANKWISE_MODELS"]) if os.environ.get("RANKWISE_MODELS") else None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder; the real one is never touched."""
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """Path of a tiny sentence-transformers bi-encoder built for this test session."""
    from rankwise.testing import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder", seed=0)


@pytest.fixture(scope="session")
def other_tiny_encoder(tmp_path_factory) -> Path:
    """A second tiny encoder with other weights (same architecture)."""
    from rankwise.testing import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "other-encoder", seed=1)


def write_beir(folder: Path, docs: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]],
               split: str = "test") -> Path:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture()
def synthetic_beir(tmp_path) -> Path:
    """A 400-document BEIR folder of pseudo-sentences with 10 queries."""
    from rankwise.testing import corpus_texts

    texts = corpus_texts()
    docs = [{"_id": f"d{i}", "title": f"title {i % 7}", "text": t} for i, t in enumerate(texts)]
    queries = [{"_id": f"q{i}", "text": texts[i * 37][:60]} for i in range(10)]
    qrels = [(f"q{i}", f"d{i * 37}", 1) for i in range(10)]
    return write_beir(tmp_path / "synthetic", docs, queries, qrels)


def require_shared(name: str) -> Path:
    path = SHARED_BEIR / name
    if not path.is_dir():
        pytest.skip(f"{path} is not here")
    return path


def require_model(name: str) -> Path:
    if MODELS is None or not (MODELS / name).exists():
        pytest.skip(f"RANKWISE_MODELS/{name} is not here (run ../shared/assets/fetch-models.sh)")
    return MODELS / name


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """Path of a tiny one-label cross-encoder built for this test session."""
    from rankwise.testing import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """Path of a tiny Llama causal LM (with a chat template) built for this test session."""
    from rankwise.testing import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")
