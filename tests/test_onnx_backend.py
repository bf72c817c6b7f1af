"""ONNX backend: export and parity for encoders and cross-encoders, int8, the cache, corrupt files, the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rankwise.retrieval.backend.value import ONNX, ONNX_INT8, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.engines import CROSS_ENCODER, ENCODER


@pytest.fixture(scope="module")
def encoder_export(tiny_encoder, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_encoder), ENCODER, tmp_path_factory.mktemp("onnx") / "encoder", backend="onnx-int8").folder


@pytest.fixture(scope="module")
def texts():
    from rankwise.testing import corpus_texts

    return corpus_texts()[:48]


def test_encoder_fp32_matches_torch(tiny_encoder, encoder_export, texts):
    from rankwise.retrieval.encoder import Encoder

    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=16)
    onnx_enc = Encoder(str(encoder_export), device="cpu", backend="onnx", batch_size=16)
    assert np.abs(torch_enc.encode_docs(texts) - onnx_enc.encode_docs(texts)).max() <= 1e-4
    assert np.abs(torch_enc.encode_queries(texts[:5]) - onnx_enc.encode_queries(texts[:5])).max() <= 1e-4
    assert onnx_enc.fingerprint == torch_enc.fingerprint  # same vectors: either can search the other's index
    assert onnx_enc.index_key != torch_enc.index_key  # but cached builds are kept apart
    assert onnx_enc.export.manifest["parity"]["fp32"]["passed"]


def test_encoder_int8_cosine_and_its_own_fingerprint(tiny_encoder, encoder_export, texts):
    from rankwise.retrieval.encoder import Encoder

    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=16)
    int8 = Encoder(str(encoder_export), device="cpu", backend="onnx-int8", batch_size=16)
    cos = (torch_enc.encode_docs(texts) * int8.encode_docs(texts)).sum(1)
    assert cos.min() >= 0.99
    assert int8.fingerprint != torch_enc.fingerprint
    record = int8.export.manifest["parity"]["int8"]
    assert record["mean_cosine"] >= 0.99 and 0.0 <= record["ranking_agreement"] <= 1.0
    files = int8.export.manifest["files"]
    assert files["model.int8.onnx"]["bytes"] < files["model.onnx"]["bytes"]


def test_a_bert_encoder_is_fused_and_quantized_to_qattention(encoder_export):
    import onnx

    from rankwise.retrieval.backend.cache import read_export

    export = read_export(encoder_export, backend=ONNX_INT8)
    assert export.manifest["fused"].get("Attention") == 2  # one per layer of the tiny BERT
    fp32_ops = {n.op_type for n in onnx.load(str(export.file(ONNX))).graph.node}
    int8_ops = {n.op_type for n in onnx.load(str(export.file(ONNX_INT8))).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= fp32_ops
    assert "QAttention" in int8_ops and "Attention" not in int8_ops


def test_a_failed_fusion_falls_back_to_the_plain_graph(tiny_encoder, tmp_path, monkeypatch, texts):
    from rankwise.retrieval.backend import optimize
    from rankwise.retrieval.backend.cache import export_model
    from rankwise.retrieval.encoder import Encoder

    def broken(*args, **kwargs):
        raise ValueError("no attention fused")

    monkeypatch.setattr(optimize, "fuse_transformer", broken)
    export = export_model(str(tiny_encoder), ENCODER, tmp_path / "plain")
    assert export.manifest["fused"] == {}
    onnx_enc = Encoder(str(tmp_path / "plain"), device="cpu", backend="onnx", batch_size=16)
    assert np.abs(Encoder(str(tiny_encoder), device="cpu", batch_size=16).encode_docs(texts[:20])
                  - onnx_enc.encode_docs(texts[:20])).max() <= 1e-4


def test_int8_index_never_reuses_a_torch_index(tiny_encoder, encoder_export, synthetic_beir):
    from rankwise.retrieval import cached
    from rankwise.retrieval.dense import DenseRetriever
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus

    corpus = Corpus(synthetic_beir)
    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=64)
    int8 = Encoder(str(encoder_export), device="cpu", backend="onnx-int8", batch_size=64)
    torch_index = cached.dense_index(corpus, torch_enc, progress=False)
    int8_index = cached.dense_index(corpus, int8, progress=False)
    assert torch_index != int8_index
    with pytest.raises(InputError, match="fingerprint"):
        DenseRetriever(torch_index, int8)
    DenseRetriever(torch_index, Encoder(str(encoder_export), device="cpu", backend="onnx"))  # fp32 onnx may search it


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_cache_reuse_corrupt_rebuild_and_stale_rebuild(tiny_encoder, other_tiny_encoder, tmp_path, texts):
    from rankwise.retrieval.encoder import Encoder

    model = tmp_path / "model"
    shutil.copytree(tiny_encoder, model)
    first = Encoder(str(model), device="cpu", backend="onnx")
    stamp = first.export.file().stat().st_mtime_ns
    again = Encoder(str(model), device="cpu", backend="onnx")  # reused: no export
    assert again.export.folder == first.export.folder and again.export.file().stat().st_mtime_ns == stamp
    _corrupt(first.export.file())  # a corrupt cached graph is never loaded: exported again
    rebuilt = Encoder(str(model), device="cpu", backend="onnx")
    assert rebuilt.export.file().stat().st_mtime_ns != stamp
    assert np.abs(rebuilt.encode_docs(texts[:8]) - Encoder(str(model), device="cpu").encode_docs(texts[:8])).max() <= 1e-4
    shutil.rmtree(model)
    shutil.copytree(other_tiny_encoder, model)  # same path, other weights: the export is stale
    changed = Encoder(str(model), device="cpu", backend="onnx")
    assert changed.export.folder == first.export.folder
    assert changed.export.manifest["source_fingerprint"] != first.export.manifest["source_fingerprint"]
    assert np.abs(changed.encode_docs(texts[:8]) - Encoder(str(model), device="cpu").encode_docs(texts[:8])).max() <= 1e-4


def test_corrupt_export_is_refused(encoder_export, tmp_path):
    from rankwise.retrieval.backend.cache import CorruptExport
    from rankwise.retrieval.encoder import Encoder

    broken = tmp_path / "broken"
    shutil.copytree(encoder_export, broken)
    _corrupt(broken / "model.onnx")
    with pytest.raises(CorruptExport, match="checksum"):
        Encoder(str(broken), device="cpu", backend="onnx")


@pytest.fixture(scope="module")
def cross_encoder_export(tiny_cross_encoder, tmp_path_factory):
    """Exported by the command line, int8 included."""
    from rankwise.cli import main

    out = tmp_path_factory.mktemp("onnx") / "cross-encoder"
    main(["export", str(tiny_cross_encoder), str(out), "--kind", "cross-encoder", "--backend", "onnx-int8"])
    return out


def test_cross_encoder_parity_and_int8(tiny_cross_encoder, cross_encoder_export):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.testing import corpus_texts


    docs = corpus_texts()[100:140]
    pairs = [(d[:30], d) for i, d in enumerate(docs)]
    torch_scores = np.array(CrossEncoderReranker(str(tiny_cross_encoder), device="cpu", batch_size=8).score_pairs(pairs))
    onnx_ce = CrossEncoderReranker(str(cross_encoder_export), device="cpu", batch_size=8, backend="onnx")
    fp32 = np.array(onnx_ce.score_pairs(pairs))
    assert np.abs(torch_scores - fp32).max() <= 1e-4
    # int8 against fp32, pair by pair (batch_size=1: each pair's activations quantized on their own): within
    # 5% of the scores' size. The tiny model's scores are nearly flat (their spread is below int8's error), so
    # the ranking agreement is checked on a real encoder below.
    int8 = CrossEncoderReranker(str(cross_encoder_export), device="cpu", batch_size=1, backend="onnx-int8")
    assert int8.backend == Backend("onnx", True)
    int8_scores = np.array(int8.score_pairs(pairs))
    assert int8_scores.shape == fp32.shape and np.abs(int8_scores - fp32).max() <= 0.05 * np.abs(fp32).max()
    record = int8.export.manifest["parity"]["int8"]
    assert record["variant"] == "int8" and record["max_abs_diff"] <= 0.05 * np.abs(fp32).max()


@pytest.mark.slow
def test_int8_cross_encoder_ranks_as_fp32_does(tmp_path):
    """A cross-encoder on a trained encoder (all-MiniLM-L6-v2, new head): int8 keeps fp32's rankings."""
    from rankwise.rerank.cross_encoder import CrossEncoderReranker, init_cross_encoder
    from rankwise.retrieval.backend.cache import export_model
    from rankwise.retrieval.backend.parity import ranking_agreement
    from tests.conftest import require_model
    from rankwise.testing import corpus_texts

    ce = init_cross_encoder(str(require_model("all-MiniLM-L6-v2")), tmp_path / "ce", seed=0, max_length=64)
    folder = export_model(str(ce), CROSS_ENCODER, tmp_path / "onnx", backend="onnx-int8").folder
    docs = corpus_texts()[200:220]
    lists = [(docs[q][:40], docs) for q in (0, 5, 10, 15)]
    fp32 = np.array(CrossEncoderReranker(str(folder), device="cpu", backend="onnx").score(lists))
    int8 = np.array(CrossEncoderReranker(str(folder), device="cpu", batch_size=1, backend="onnx-int8").score(lists))
    spread = (fp32.max(1) - fp32.min(1)).min()
    assert spread > 0 and np.abs(fp32 - int8).max() <= 0.25 * spread
    assert ranking_agreement(fp32, int8) >= 0.9


def test_cli_export_and_bad_model(cross_encoder_export, tiny_cross_encoder, tiny_causal_lm, tmp_path, capsys):
    from rankwise.cli import main

    for name in ("model.onnx", "model.int8.onnx", "manifest.json", "tokenizer.json"):
        assert (cross_encoder_export / name).is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_causal_lm), str(tmp_path / "bad"), "--kind", "cross-encoder"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(tiny_causal_lm) in err and "sequence-classification head" in err
    with pytest.raises(SystemExit):
        main(["export", str(tiny_cross_encoder), str(tmp_path / "bad"), "--kind", "decoder"])


def test_spec_backend_options():
    from rankwise.rerank.spec import parse_spec

    spec = parse_spec("cross-encoder:some/model,backend=onnx-int8")
    assert spec.options == {"backend": "onnx-int8"}
    with pytest.raises(InputError, match="backend=tensorrt: must be one of torch, onnx, onnx-int8"):
        parse_spec("listwise:m,backend=tensorrt")
    with pytest.raises(InputError, match="int8="):  # the older second key is gone: one value names the backend
        parse_spec("cross-encoder:m,backend=onnx,int8=true")


def test_a_cuda_provider_that_cannot_start_is_an_error_not_a_silent_cpu_run(encoder_export, monkeypatch):
    """ONNX Runtime falls back to the CPU when the CUDA provider cannot start; the session says so instead."""
    from rankwise.retrieval.backend import session

    monkeypatch.setattr(session, "cuda_available", lambda: True)
    monkeypatch.setattr(session, "_fp16", lambda path: str(path))  # no GPU here: keep the fp32 graph
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this ONNX Runtime has a working CUDA provider")
    with pytest.raises(InputError, match="could not start the CUDAExecutionProvider"):
        session.OnnxSession(next(encoder_export.glob("**/model.onnx")), device="cuda")


@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu and a GPU (run on the lent device machine)")
def test_cuda_provider_fp16_matches_torch(tiny_encoder, encoder_export, texts):
    from rankwise.retrieval.encoder import Encoder

    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=16)
    cuda_enc = Encoder(str(encoder_export), backend="onnx", device="cuda", batch_size=16)
    assert cuda_enc.session.provider == "CUDAExecutionProvider"
    ref, got = torch_enc.encode_docs(texts), cuda_enc.encode_docs(texts)
    assert np.abs(ref - got).max() <= 2e-3  # fp16 weights and activations
    assert (ref * got).sum(1).min() >= 0.9999
