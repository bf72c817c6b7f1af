"""OpenVINO backends: the factories, parity with torch (fp32 and NNCF int8), the manifests, search by the
index's own backend, and the one-line message when the extra is missing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.engines import CROSS_ENCODER, ENCODER

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def encoder_export(tiny_encoder, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_encoder), ENCODER, tmp_path_factory.mktemp("openvino") / "encoder").folder


@pytest.fixture(scope="module")
def pair_export(tiny_cross_encoder, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_cross_encoder), CROSS_ENCODER, tmp_path_factory.mktemp("openvino") / "ce").folder


@pytest.fixture(scope="module")
def texts():
    from rankwise.testing import corpus_texts

    return corpus_texts()[:48]


def test_the_factories_pick_the_openvino_engines(encoder_export, pair_export, texts):
    from rankwise.retrieval.engines import OpenVinoEncoderEngine, OpenVinoPairEngine, encoder_engine, pair_engine

    for backend in ("openvino", "openvino-int8"):
        enc = encoder_engine(backend, str(encoder_export), str(encoder_export), calibration=texts[:16])
        assert isinstance(enc, OpenVinoEncoderEngine) and str(enc.backend) == backend
        pair = pair_engine(backend, str(pair_export), str(pair_export))
        assert isinstance(pair, OpenVinoPairEngine) and str(pair.backend) == backend


def test_encoder_fp32_matches_torch_and_int8_is_close(tiny_encoder, encoder_export, texts):
    from rankwise.retrieval.encoder import Encoder

    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=16)
    fp32 = Encoder(str(encoder_export), backend="openvino", batch_size=16)
    ref = torch_enc.encode_docs(texts)
    assert np.abs(ref - fp32.encode_docs(texts)).max() <= 1e-4
    assert np.abs(torch_enc.encode_queries(texts[:5]) - fp32.encode_queries(texts[:5])).max() <= 1e-4
    assert fp32.fingerprint == torch_enc.fingerprint  # same vectors within 1e-4: either searches the other's index
    assert fp32.index_key != torch_enc.index_key

    int8 = Encoder(str(encoder_export), backend="openvino-int8", batch_size=16, calibration=texts)
    got = int8.encode_docs(texts)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.98
    assert int8.fingerprint not in (torch_enc.fingerprint, fp32.fingerprint)
    assert int8.describe()["calibration"] == int8.engine.calibration


def _has_bf16() -> bool:
    import openvino

    from rankwise.retrieval.backend.openvino import cpu_capabilities

    return "BF16" in cpu_capabilities(openvino)


def test_bf16_is_close_to_torch_with_a_fingerprint_of_its_own_or_refused_without_the_instructions(
        tiny_encoder, tiny_cross_encoder, encoder_export, pair_export, texts):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.retrieval.encoder import Encoder

    if not _has_bf16():  # OpenVINO would run fp32 under the bf16 name: one line, before any work
        with pytest.raises(InputError, match="no bfloat16 instructions") as err:
            Encoder(str(encoder_export), backend="openvino-bf16")
        assert err.value.field == "backend"
        return
    torch_enc = Encoder(str(tiny_encoder), device="cpu", batch_size=16)
    bf16 = Encoder(str(encoder_export), backend="openvino-bf16", batch_size=16)
    ref, got = torch_enc.encode_docs(texts), bf16.encode_docs(texts)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.999 and np.abs(ref - got).max() > 1e-6  # close, and computed in bfloat16 indeed
    assert bf16.fingerprint != torch_enc.fingerprint and bf16.index_key.endswith("-openvino-bf16")
    record = bf16.export.manifest["openvino"]["bf16"]
    assert record["graph"] == bf16.export.manifest["openvino"]["fp32"]["graph"]  # the same graph, compiled otherwise
    assert record["parity"]["variant"] == "bf16" and record["parity"]["passed"]
    assert record["parity"]["requirement"] == "mean_cosine >= 0.999"
    pairs = [(texts[0][:40], t) for t in texts[:24]]
    ref_scores = np.array(CrossEncoderReranker(str(tiny_cross_encoder), device="cpu").score_pairs(pairs))
    scores = np.array(CrossEncoderReranker(str(pair_export), backend="openvino-bf16").score_pairs(pairs))
    assert np.abs(ref_scores - scores).max() <= 0.02 * np.abs(ref_scores).max()


def test_bf16_on_a_cpu_without_the_instructions_is_one_line(encoder_export, monkeypatch):
    import rankwise.retrieval.backend.openvino as ov_backend
    from rankwise.retrieval.encoder import Encoder

    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda ov: ["FP32", "INT8"])  # an AVX2-only CPU
    with pytest.raises(InputError, match="no bfloat16 instructions.*openvino or openvino-int8") as err:
        Encoder(str(encoder_export), backend="openvino-bf16")
    assert err.value.field == "backend"
    from rankwise.rerank.llm import CausalLM

    with pytest.raises(InputError, match="no bfloat16 instructions.*use torch, onnx or onnx-int8$"):
        CausalLM("any-causal-lm", backend="openvino-bf16")  # refused before any export


def test_a_bf16_index_is_not_searched_by_fp32_queries(tiny_encoder, synthetic_beir, tmp_path):
    from rankwise.retrieval.dense import DenseRetriever

    if not _has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions (the refusal is tested above)")
    from rankwise.cli import main

    out = tmp_path / "idx"
    _ok(main, ["index", str(synthetic_beir), "--out", str(out), "--retriever", "dense", "--encoder", str(tiny_encoder),
               "--backend", "openvino-bf16"])
    assert str(DenseRetriever(out).encoder.engine.backend) == "openvino-bf16"  # from the manifest
    for other in ("torch", "openvino"):
        with pytest.raises(InputError, match="does not reproduce"):
            DenseRetriever(out, backend=other)


def test_cross_encoder_fp32_matches_torch_and_int8_keeps_the_order(tiny_cross_encoder, pair_export, texts):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker

    pairs = [(texts[0][:40], t) for t in texts[:24]]
    ref = np.array(CrossEncoderReranker(str(tiny_cross_encoder), device="cpu").score_pairs(pairs))
    fp32 = np.array(CrossEncoderReranker(str(pair_export), backend="openvino").score_pairs(pairs))
    assert np.abs(ref - fp32).max() <= 1e-4
    # int8, calibrated on the bundled pairs: within 5% of the scores' size. The tiny model's scores are nearly
    # flat (their spread is below int8's error), so the ranking agreement is measured on all-MiniLM-L6-v2 by
    # bench/cpu_backends.py and reported at export (the parity record)
    int8 = CrossEncoderReranker(str(pair_export), backend="openvino-int8")
    got = np.array(int8.score_pairs(pairs))
    assert np.abs(ref - got).max() <= 0.05 * np.abs(ref).max()
    record = int8.export.manifest["openvino"]["int8"][int8.engine.calibration]["parity"]
    assert record["variant"] == "int8" and 0.0 <= record["ranking_agreement"] <= 1.0


def test_the_export_manifest_records_the_graphs_checksums_and_parity(encoder_export, texts):
    from rankwise.retrieval.backend.calibration import calibration_key
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.files import sha256_file

    encoder = Encoder(str(encoder_export), backend="openvino-int8", calibration=texts[:20])
    manifest = json.loads((encoder_export / "manifest.json").read_text())
    section = manifest["openvino"]
    assert section["fp32"]["parity"]["passed"] and section["fp32"]["parity"]["max_abs_diff"] <= 1e-4
    key = calibration_key(texts[:20])
    assert encoder.engine.calibration == key
    entry = section["int8"][key]
    assert entry["calibration"]["items"] == 20 and entry["parity"]["passed"]
    assert "openvino" in section["versions"] and "nncf" in section["versions"]
    for name in [section["fp32"]["graph"], *entry["files"]]:
        assert manifest["files"][name]["sha256"] == sha256_file(encoder_export / name)


def test_a_changed_int8_graph_is_refused(encoder_export, texts, tmp_path):
    import shutil

    from rankwise.retrieval.backend.cache import CorruptExport
    from rankwise.retrieval.encoder import Encoder

    folder = tmp_path / "copy"
    shutil.copytree(encoder_export, folder)
    key = Encoder(str(folder), backend="openvino-int8", calibration=texts[:12]).engine.calibration
    binary = folder / f"model.openvino-int8-{key}.bin"
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    with pytest.raises(CorruptExport, match="checksum"):
        Encoder(str(folder), backend="openvino-int8", calibration=key)
    with pytest.raises(InputError, match="no openvino-int8 graph calibrated as 'feedfeedfeed'"):
        Encoder(str(folder), backend="openvino-int8", calibration="feedfeedfeed")


def _ok(main, argv: list[str]) -> None:
    """Run the command in-process; it returns, or exits with status 0."""
    try:
        main(argv)
    except SystemExit as done:
        assert done.code in (0, None)


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_an_openvino_index_is_searched_by_its_own_backend(tiny_encoder, synthetic_beir, tmp_path, backend):
    from rankwise.cli import main
    from rankwise.retrieval.backend.calibration import calibration_key, corpus_calibration
    from rankwise.retrieval.dense import DenseRetriever
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.run import Run

    out, run_file = tmp_path / "idx", tmp_path / "run.trec"
    _ok(main, ["index", str(synthetic_beir), "--out", str(out), "--retriever", "dense", "--encoder", str(tiny_encoder),
               "--backend", backend])
    built_with = json.loads((out / "manifest.json").read_text())["encoder"]
    assert built_with["backend"] == backend and "int8" not in built_with  # one field
    if backend.endswith("int8"):  # calibrated on the collection being indexed
        assert built_with["calibration"] == calibration_key(corpus_calibration(Corpus(synthetic_beir)))
    _ok(main, ["search", str(out), "--queries", str(synthetic_beir / "queries.jsonl"), "-k", "5", "--out", str(run_file)])
    run = Run.read(run_file)
    assert len(run) == 10 and all(len(run[q]) == 5 for q in run)
    retriever = DenseRetriever(out)
    assert str(retriever.encoder.engine.backend) == backend  # from the manifest, not named again
    assert retriever.encoder.fingerprint == built_with["fingerprint"]


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_causal_lms_refuse_the_openvino_backends_that_do_not_beat_onnx_runtime(tiny_causal_lm, backend):
    from rankwise.rerank.lm_engines import lm_engine

    with pytest.raises(InputError, match="causal LMs run on torch, onnx, onnx-int8, openvino-bf16 or api"):
        lm_engine(backend, str(tiny_causal_lm), str(tiny_causal_lm))


LM_PROMPTS = ["query heart [A] yes", "no [B] > [C] 1 2 3 query document search index", "x"]


@pytest.fixture(scope="module")
def lm_export(tiny_causal_lm, tmp_path_factory):
    from rankwise.rerank.lm_engines import CAUSAL_LM
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path_factory.mktemp("openvino") / "lm").folder


def _on_openvino_fp32(lm_export):
    """A CausalLM whose engine is the OpenVINO one compiled in fp32 (which the rerankers are not offered:
    it checks the engine against torch's exact logits on any CPU)."""
    from rankwise.rerank.llm import CausalLM
    from rankwise.rerank.lm_engines import OpenVinoLMEngine
    from rankwise.retrieval.backend.value import OPENVINO

    lm = CausalLM(str(lm_export), backend="onnx", device="cpu")
    lm.engine = OpenVinoLMEngine(str(lm_export), OPENVINO)
    lm.batch_size, lm.batch_tokens = 4, lm.engine.batch_tokens
    return lm


def test_the_causal_lm_on_openvino_runs_the_plain_graph_and_equals_torch(tiny_causal_lm, lm_export):
    import onnx

    from rankwise.rerank.llm import CausalLM
    from rankwise.retrieval.backend.cache import read_export
    from rankwise.retrieval.backend.openvino import PLAIN_FILE

    torch_lm, ov_lm = CausalLM(str(tiny_causal_lm), device="cpu"), _on_openvino_fp32(lm_export)
    export = read_export(lm_export, kind="causal-lm")
    section = export.manifest["openvino"]
    assert section["fp32"]["graph"] == PLAIN_FILE and section["fp32"]["parity"]["max_abs_diff"] <= 1e-4
    assert PLAIN_FILE in export.manifest["files"]  # checksummed beside model.onnx
    ops = {n.op_type for n in onnx.load(str(lm_export / PLAIN_FILE), load_external_data=False).graph.node}
    assert "GroupQueryAttention" not in ops and "Softmax" in ops  # model.onnx keeps ONNX Runtime's fused operator
    ids = torch_lm.single_token_ids(["A", "B", "yes"])
    for token_ids in (ids, None):  # a padded batch of three prompts; then the whole vocabulary
        got, ref = ov_lm.next_token_logits(LM_PROMPTS, token_ids), torch_lm.next_token_logits(LM_PROMPTS, token_ids)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4
    ctx, tails = torch_lm.split_common_prefix(["the query [A]: 1", "the query [B]: 23", "the query [C]: 4 5"])
    groups = [(ctx, tails), (ctx[:3], tails[:2])]
    ref_tails, got_tails = dict(torch_lm.iter_tail_logits(groups, last=2)), dict(ov_lm.iter_tail_logits(groups, last=2))
    assert ref_tails.keys() == got_tails.keys()
    assert max(np.abs(a - b).max() for g in ref_tails for a, b in zip(ref_tails[g], got_tails[g])) <= 1e-4
    assert ov_lm.generate(LM_PROMPTS, max_new_tokens=5) == torch_lm.generate(LM_PROMPTS, max_new_tokens=5)
    from rankwise.rerank.groupwise import GroupwiseReranker
    from rankwise.rerank.listwise import ListwiseReranker
    from rankwise.testing import corpus_texts

    docs = corpus_texts()
    lists = [(docs[0][:40], docs[1:8]), (docs[50][:30], docs[51:56])]
    for cls, options in ((ListwiseReranker, {"window": 4, "stride": 2}),
                         (GroupwiseReranker, {"group_size": 3, "rounds": 1, "levels": 10})):
        for r, g in zip(cls(torch_lm, **options).score(lists), cls(ov_lm, **options).score(lists)):
            assert np.abs(np.array(r) - np.array(g)).max() <= 1e-3


def test_causal_lms_rerank_on_openvino_bf16_or_refuse_without_the_instructions(
        tiny_causal_lm, lm_export, synthetic_beir, tmp_path):
    from rankwise.cli import main
    from rankwise.rerank.llm import CausalLM
    from rankwise.retrieval.run import Run

    if not _has_bf16():
        with pytest.raises(InputError, match="no bfloat16 instructions.*use torch, onnx or onnx-int8$"):
            CausalLM(str(lm_export), backend="openvino-bf16")
        return
    lm = CausalLM(str(lm_export), backend="openvino-bf16")
    assert str(lm.backend) == "openvino-bf16" and type(lm.engine).__name__ == "OpenVinoLMEngine"
    record = lm.export.manifest["openvino"]["bf16"]
    assert record["graph"] == lm.export.manifest["openvino"]["fp32"]["graph"] and record["parity"]["variant"] == "bf16"
    torch_lm = CausalLM(str(tiny_causal_lm), device="cpu")
    got, ref = lm.next_token_logits(LM_PROMPTS), torch_lm.next_token_logits(LM_PROMPTS)
    assert 0 < np.abs(got - ref).max() <= 0.05  # bfloat16: close to torch, not equal
    run_file, out = tmp_path / "bm25.trec", tmp_path / "reranked.trec"
    run_file.write_text("".join(f"q{q} Q0 d{q * 37 + r} {r + 1} {10 - r} bm25\n" for q in range(3) for r in range(5)))
    _ok(main, ["rerank", str(run_file), "--queries", str(synthetic_beir / "queries.jsonl"),
               "--corpus", str(synthetic_beir), "--out", str(out),
               "--reranker", f"listwise:{lm_export},backend=openvino-bf16,window=4,stride=2"])
    reranked = Run.read(out)
    expected = {f"q{q}": {f"d{q * 37 + r}" for r in range(5)} for q in range(3)}
    assert {q: {doc for doc, _ in reranked[q]} for q in reranked} == expected


@pytest.mark.slow
@pytest.mark.parametrize("package", ["openvino", "nncf"])
def test_a_missing_package_is_one_line_naming_the_extra(tiny_encoder, synthetic_beir, tmp_path, package):
    backend = "openvino-int8" if package == "nncf" else "openvino"
    code = (f"import sys; sys.modules[{package!r}] = None\n"
            "from rankwise.cli import main\n"
            f"main(['index', {str(synthetic_beir)!r}, '--out', {str(tmp_path / 'idx')!r}, '--retriever', 'dense', "
            f"'--encoder', {str(tiny_encoder)!r}, '--backend', {backend!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rankwise: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines == ["rankwise: error: The OpenVINO backend needs the 'openvino' extra: pip install \"rankwise[openvino]\""]
