"""FAISS on the GPU, selection logic only (no GPU here): a fake ``get_num_gpus`` / ``index_cpu_to_all_gpus``."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.index import DenseIndex, IndexConfig, build_dense_index


@pytest.fixture()
def fake_gpus(monkeypatch):
    """Pretend FAISS sees 2 GPUs: cloning records its options and returns the CPU index itself."""
    calls: list[tuple[str, object]] = []

    def to_all(index, co=None):
        calls.append(("to_gpu", co.shard))
        return index

    def to_cpu(index):
        calls.append(("to_cpu", None))
        return index

    class Options:  # CPU builds of FAISS have no GPU classes
        shard = False

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", Options, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_all, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", to_cpu, raising=False)
    return calls


@pytest.fixture()
def built(tmp_path_factory, synthetic_beir, tiny_encoder):
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    encoder = Encoder(str(tiny_encoder), batch_size=32)
    out = tmp_path_factory.mktemp("idx") / "flat"
    build_dense_index(Corpus(synthetic_beir), encoder, out, IndexConfig(type="flat"), progress=False, gpu=False)
    return out, encoder


def test_no_gpu_stays_on_cpu_and_refuses_an_explicit_gpu(monkeypatch, built):
    out, _ = built
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert DenseIndex.load(out).index.__class__.__name__.startswith("Index")
    # faiss-cpu names the extra; a GPU build that sees no GPU says so
    with pytest.raises(InputError, match="FAISS sees none" if hasattr(faiss, "StandardGpuResources")
                       else "FAISS on GPU needs the 'gpu' extra"):
        DenseIndex.load(out, gpu=True)


def test_gpus_take_flat_indexes_sharded_unless_told_not_to(fake_gpus, built):
    out, _ = built
    DenseIndex.load(out)
    assert fake_gpus == [("to_gpu", True)]
    DenseIndex.load(out, gpu=False)
    assert fake_gpus == [("to_gpu", True)]


def test_build_trains_and_adds_on_the_gpus_and_writes_a_cpu_index(fake_gpus, tmp_path, synthetic_beir, tiny_encoder):
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    encoder = Encoder(str(tiny_encoder), batch_size=32)
    build_dense_index(Corpus(synthetic_beir), encoder, tmp_path / "ivf", IndexConfig(type="ivf", nlist=2), progress=False)
    assert fake_gpus == [("to_gpu", True), ("to_cpu", None)]
    build_dense_index(Corpus(synthetic_beir), encoder, tmp_path / "hnsw", IndexConfig(type="hnsw"), progress=False)
    assert len(fake_gpus) == 2  # FAISS has no GPU HNSW


def test_queries_go_in_batches_with_the_same_results(built, monkeypatch):
    out, encoder = built
    index = DenseIndex.load(out, gpu=False)
    queries = encoder.encode_queries(["airflow wing", "protein cell", "gene", "heart blood", "a"] * 3)
    whole = index.search(queries, 3)
    index.search_batch = 4
    calls = []
    search = index.index.search
    monkeypatch.setattr(index.index, "search", lambda x, k: calls.append(len(x)) or search(x, k))
    parts = index.search(queries, 3)
    assert calls == [4, 4, 4, 3]
    np.testing.assert_array_equal(parts[1], whole[1])
    np.testing.assert_allclose(parts[0], whole[0])
