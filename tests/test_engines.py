"""Engines: one per backend and model kind, picked once by a factory; the model classes hold no backend branch.

The factories (:func:`rankwise.retrieval.engines.encoder_engine`, :func:`rankwise.retrieval.engines.pair_engine`,
:func:`rankwise.rerank.lm_engines.lm_engine`) are the one place a backend value picks a class; torch and
ONNX engines of the same weights agree within 1e-4 on the batches the shared data path prepares.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from rankwise.retrieval.backend.value import ONNX, TORCH, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.engines import CROSS_ENCODER, ENCODER
from rankwise.rerank.lm_engines import CAUSAL_LM

ROOT = Path(__file__).resolve().parent.parent
MODEL_CLASSES = ("retrieval/encoder.py", "rerank/cross_encoder.py", "rerank/llm.py")


@pytest.fixture(scope="module")
def texts():
    from rankwise.testing import corpus_texts

    return corpus_texts()[:24]


@pytest.fixture(scope="module")
def encoder_export(tiny_encoder, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_encoder), ENCODER, tmp_path_factory.mktemp("onnx") / "enc", backend="onnx-int8").folder


@pytest.fixture(scope="module")
def pair_export(tiny_cross_encoder, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_cross_encoder), CROSS_ENCODER, tmp_path_factory.mktemp("onnx") / "ce",
                        backend="onnx-int8").folder


@pytest.fixture(scope="module")
def lm_export(tiny_causal_lm, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path_factory.mktemp("onnx") / "lm").folder


@pytest.mark.parametrize("backend, cls, int8", [("torch", "TorchEncoderEngine", False),
                                                ("onnx", "OnnxEncoderEngine", False),
                                                ("onnx-int8", "OnnxEncoderEngine", True)])
def test_encoder_engine_per_backend(tiny_encoder, encoder_export, backend, cls, int8):
    from rankwise.retrieval import engines

    path = str(tiny_encoder if backend == "torch" else encoder_export)
    engine = engines.encoder_engine(backend, path, path, device="cpu")
    assert type(engine) is getattr(engines, cls)
    assert engine.backend == Backend(backend.split("-")[0], int8) and str(engine.backend) == backend
    assert (engine.model is None) == (backend != "torch") and (engine.session is None) == (backend == "torch")
    assert engine.index_suffix == ("" if backend == "torch" else f"-{backend}")


@pytest.mark.parametrize("backend, cls", [("torch", "TorchPairEngine"), ("onnx", "OnnxPairEngine"),
                                          ("onnx-int8", "OnnxPairEngine")])
def test_pair_engine_per_backend(tiny_cross_encoder, pair_export, backend, cls):
    from rankwise.retrieval import engines

    path = str(tiny_cross_encoder if backend == "torch" else pair_export)
    engine = engines.pair_engine(backend, path, path, device="cpu")
    assert type(engine) is getattr(engines, cls) and engine.backend == Backend.parse(backend)
    assert engine.backend.int8 == (backend == "onnx-int8")


def test_lm_engine_per_backend(tiny_causal_lm, lm_export):
    from rankwise.rerank import lm_engines

    torch_engine = lm_engines.lm_engine("torch", str(tiny_causal_lm), str(tiny_causal_lm), device="cpu")
    onnx_engine = lm_engines.lm_engine("onnx", str(lm_export), str(lm_export), device="cpu")
    assert type(torch_engine) is lm_engines.TorchLMEngine and torch_engine.backend == TORCH
    assert type(onnx_engine) is lm_engines.OnnxLMEngine and onnx_engine.backend == ONNX
    assert onnx_engine.batch_size == 1 and torch_engine.batch_tokens == lm_engines.CPU_BATCH_TOKENS
    sequences = [torch_engine.tokenizer.encode(t, add_special_tokens=False) for t in ("query heart [A] yes", "x")]
    torch_engine.tokenizer.padding_side = "left"  # as CausalLM sets it
    for seqs in ([sequences[0]], [sequences[1]]):
        got = onnx_engine.next_token_logits(seqs, [5, 7, 9])
        assert got.shape == (1, 3) and np.abs(got - torch_engine.next_token_logits(seqs, [5, 7, 9])).max() <= 1e-4
    assert onnx_engine.next_token_logits([sequences[1]], None).shape[1] == len(onnx_engine.vocab)


def test_torch_and_onnx_encoder_engines_agree(tiny_encoder, encoder_export, texts):
    from rankwise.retrieval.batching import token_batches, tokenize
    from rankwise.retrieval.engines import encoder_engine

    torch_engine = encoder_engine("torch", str(tiny_encoder), str(tiny_encoder), device="cpu")
    onnx_engine = encoder_engine("onnx", str(encoder_export), str(encoder_export), device="cpu")
    assert (onnx_engine.fingerprint, onnx_engine.dim) == (torch_engine.fingerprint, torch_engine.dim)
    tok = tokenize(torch_engine.tokenizer, texts, max_length=torch_engine.max_length)
    extras = torch_engine.extras(texts, tok, None, "document")
    assert extras is not None and onnx_engine.extras(texts, tok, None, "document") == {}
    for idx in token_batches(tok.lengths, 8):
        with torch_engine.inference():
            mine = torch_engine.run(torch_engine.prepare(tok, idx), "document", extras)
        theirs = onnx_engine.run(onnx_engine.prepare(tok, idx), "document", {})
        assert mine.shape == (len(idx), torch_engine.dim) and mine.dtype == np.float32
        assert np.abs(mine - theirs).max() <= 1e-4
        # the model's own preprocess (the fallback) gives the same vectors
        assert np.abs(torch_engine.forward_texts([texts[i] for i in idx], None, "document") - mine).max() <= 1e-5


def test_torch_and_onnx_pair_engines_agree(tiny_cross_encoder, pair_export, texts):
    from rankwise.retrieval.batching import tokenize
    from rankwise.retrieval.engines import pair_engine

    torch_engine = pair_engine("torch", str(tiny_cross_encoder), str(tiny_cross_encoder), device="cpu")
    onnx_engine = pair_engine("onnx", str(pair_export), str(pair_export), device="cpu")
    pairs = [(texts[i][:30], texts[i + 1]) for i in range(12)]
    tok = tokenize(torch_engine.tokenizer, [q for q, _ in pairs], [d for _, d in pairs], max_length=torch_engine.max_length)
    idx = np.arange(len(pairs))
    extras = torch_engine.extras(pairs, tok)
    mine = torch_engine.run(torch_engine.prepare(tok, idx), extras)
    theirs = onnx_engine.run(onnx_engine.prepare(tok, idx), {})
    assert mine.shape == (len(pairs),) and np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(np.array(torch_engine.forward_pairs(pairs)) - mine).max() <= 1e-5
    assert np.abs(np.array(onnx_engine.forward_pairs(pairs)) - theirs).max() <= 1e-5


@pytest.mark.parametrize("factory", ["rankwise.retrieval.engines:encoder_engine", "rankwise.retrieval.engines:pair_engine",
                                     "rankwise.rerank.lm_engines:lm_engine"])
def test_an_unknown_backend_is_refused_before_loading(factory):
    import importlib

    module, name = factory.split(":")
    make = getattr(importlib.import_module(module), name)
    with pytest.raises(InputError) as err:
        make("tensorrt", "no/such/model", "no/such/model")
    assert err.value.field == "backend" and "tensorrt" in str(err.value)
    assert all(name in str(err.value) for name in Backend.NAMES)


def _backend_comparisons(source: str) -> list[str]:
    """``file:line`` of every comparison of a ``backend`` name or attribute with "torch" / "onnx" / "onnx-int8"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        names = {n.id if isinstance(n, ast.Name) else n.attr for n in operands if isinstance(n, (ast.Name, ast.Attribute))}
        values = {n.value for n in operands if isinstance(n, ast.Constant)}
        values |= {e.value for n in operands if isinstance(n, (ast.Tuple, ast.List, ast.Set))
                   for e in n.elts if isinstance(e, ast.Constant)}
        if {"backend", "runtime"} & names and {"torch", "onnx", "onnx-int8"} & values:
            found.append(str(node.lineno))
    return found


def test_the_check_finds_a_backend_branch():
    assert _backend_comparisons('if self.backend == "onnx":\n    pass\n') == ["1"]
    assert _backend_comparisons('x = 1 if backend in ("torch",) else 2\n') == ["1"]
    assert _backend_comparisons('if self.engine.asynchronous:\n    pass\n') == []


@pytest.mark.parametrize("file", MODEL_CLASSES)
def test_the_model_classes_hold_no_backend_branch(file):
    assert _backend_comparisons((ROOT / file).read_text(encoding="utf-8")) == [], \
        f"{file} compares the backend with a value: let its engine (retrieval/engines.py, rerank/lm_engines.py) differ"


def test_the_model_classes_read_through_their_engines(tiny_encoder, tiny_cross_encoder):
    from rankwise.rerank.cross_encoder import CrossEncoderReranker
    from rankwise.retrieval.encoder import Encoder

    encoder = Encoder(str(tiny_encoder), device="cpu")
    assert encoder.model is encoder.engine.model and encoder.tokenizer is encoder.engine.tokenizer
    assert (encoder.session, encoder.export, encoder.index_key) == (None, None, encoder.fingerprint[:16])
    reranker = CrossEncoderReranker(str(tiny_cross_encoder), device="cpu")
    assert reranker.model is reranker.engine.model and reranker.max_length == reranker.engine.max_length == 64
