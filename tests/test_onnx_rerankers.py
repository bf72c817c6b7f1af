"""ONNX backend for causal LMs: every CausalLM method, and each LLM reranker paradigm agreeing with torch."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.retrieval.backend.value import ONNX
from rankwise.rerank.lm_engines import CAUSAL_LM

PROMPTS = ["query heart [A] yes", "no [B] > [C] 1 2 3 query document search index", "x"]


@pytest.fixture(scope="module")
def lm_export(tiny_causal_lm, tmp_path_factory):
    from rankwise.retrieval.backend.cache import export_model

    return export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path_factory.mktemp("onnx") / "lm").folder


@pytest.fixture(scope="module")
def lms(tiny_causal_lm, lm_export):
    from rankwise.rerank.llm import CausalLM

    return CausalLM(str(tiny_causal_lm), device="cpu"), CausalLM(str(lm_export), backend="onnx", device="cpu")


@pytest.fixture(scope="module")
def lists():
    from rankwise.testing import corpus_texts

    docs = corpus_texts()
    return [(docs[0][:40], docs[1:8]), (docs[50][:30], docs[51:56])]


def test_export_parity_and_graph_inputs(lm_export):
    from rankwise.retrieval.backend.cache import read_export

    export = read_export(lm_export, kind="causal-lm")
    assert export.manifest["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    import onnx

    graph = onnx.load(str(export.file()), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input_ids", "allowed", "position_ids", "positions", "token_ids"]
    # attention fused as ONNX Runtime's GroupQueryAttention (4 query heads over 2 key/value heads), one per layer
    assert export.manifest["fused"] == {"GroupQueryAttention": 2}
    assert [n.op_type for n in graph.node].count("GroupQueryAttention") == 2
    assert "Softmax" not in {n.op_type for n in graph.node}



def test_attention_the_fused_operator_lacks_falls_back_to_the_plain_graph(tiny_causal_lm, tmp_path, monkeypatch):
    import onnx

    from rankwise.rerank.onnx import attention
    from rankwise.retrieval.backend.cache import export_model, read_export

    def sliding(*args, **kwargs):
        raise attention.Unsupported("attention with sliding_window")

    monkeypatch.setattr(attention, "attention_forward", sliding)
    export = read_export(export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path / "lm").folder, kind="causal-lm")
    assert export.manifest["fused"] == {}
    assert export.manifest["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    ops = {n.op_type for n in onnx.load(str(export.file()), load_external_data=False).graph.node}
    assert "GroupQueryAttention" not in ops and "Softmax" in ops


def test_fused_attention_refuses_what_the_operator_lacks():
    import torch

    from rankwise.rerank.onnx.attention import Unsupported, attention_forward

    q, kv = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    mask = torch.zeros(1, 1, 3, 3)
    with pytest.raises(Unsupported, match="sliding_window"):
        attention_forward(None, q, kv, kv, mask, sliding_window=2)
    with pytest.raises(Unsupported, match="3 query heads over 2"):
        attention_forward(None, q[:, :3], kv, kv, mask)
    # causal attention with the mask as additive bias, grouped heads read without repeating them
    causal = torch.zeros(3, 3).masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(), float("-inf"))
    out, _ = attention_forward(None, q, kv, kv, causal[None, None], scaling=0.5)
    expected = torch.softmax(q @ kv.repeat_interleave(2, 1).transpose(-1, -2) * 0.5 + causal, -1) @ kv.repeat_interleave(2, 1)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-5)

def test_next_token_logits(lms):
    torch_lm, onnx_lm = lms
    ids = torch_lm.single_token_ids(["A", "B", "yes"])
    assert np.abs(torch_lm.next_token_logits(PROMPTS, ids) - onnx_lm.next_token_logits(PROMPTS, ids)).max() <= 1e-4
    assert np.abs(torch_lm.next_token_logits(PROMPTS) - onnx_lm.next_token_logits(PROMPTS)).max() <= 1e-4


def test_iter_tail_logits(lms):
    torch_lm, onnx_lm = lms
    ctx, tails = torch_lm.split_common_prefix(["the query [A]: 1", "the query [B]: 23", "the query [C]: 4 5"])
    groups = [(ctx, tails), (ctx[:3], tails[:2])]
    ref = dict(torch_lm.iter_tail_logits(groups, last=2))
    got = dict(onnx_lm.iter_tail_logits(groups, last=2))
    assert ref.keys() == got.keys()
    for g, rows in ref.items():
        assert max(np.abs(a - b).max() for a, b in zip(rows, got[g])) <= 1e-4


def test_generate(lms):
    torch_lm, onnx_lm = lms
    assert onnx_lm.generate(PROMPTS, max_new_tokens=6) == torch_lm.generate(PROMPTS, max_new_tokens=6)


@pytest.mark.parametrize("paradigm, options", [
    ("pointwise", {"mode": "yesno"}),
    ("pointwise", {"mode": "erank", "levels": 10}),
    ("listwise", {"mode": "first", "window": 4, "stride": 2}),
    ("listwise", {"mode": "generate", "window": 3, "stride": 2}),
    ("groupwise", {"group_size": 3, "rounds": 1, "levels": 10}),  # the shared-prefix pass (4-D masks)
    ("groupwise", {"group_size": 3, "rounds": 1, "levels": 10, "share_prefix": False}),
])
def test_reranker_on_onnx_agrees_with_torch(lms, lists, paradigm, options):
    from rankwise.rerank.groupwise import GroupwiseReranker
    from rankwise.rerank.listwise import ListwiseReranker
    from rankwise.rerank.pointwise import LLMPointwiseReranker

    cls = {"pointwise": LLMPointwiseReranker, "listwise": ListwiseReranker, "groupwise": GroupwiseReranker}[paradigm]
    torch_lm, onnx_lm = lms
    ref = cls(torch_lm, **options).score(lists)
    got = cls(onnx_lm, **options).score(lists)
    for r, g in zip(ref, got):
        assert np.abs(np.array(r) - np.array(g)).max() <= 1e-3


def test_spec_loads_an_onnx_llm(lm_export):
    from rankwise.rerank.spec import load_reranker

    reranker = load_reranker(f"pointwise-llm:{lm_export},backend=onnx,batch_size=2")
    # on the CPU the graph reads one prompt at a time (chunked attention, per-batch int8 scales)
    assert reranker.lm.backend == ONNX and reranker.lm.batch_size == 1 and reranker.lm.session.chunked == 2


@pytest.mark.parametrize("paradigm", ["pointwise-llm", "listwise", "groupwise"])
def test_every_llm_reranker_takes_backend(lm_export, lms, paradigm):
    from rankwise.rerank.spec import PARADIGMS, load_reranker
    from rankwise.retrieval.errors import InputError

    reranker = load_reranker(f"{paradigm}:{lm_export},backend=onnx")
    assert reranker.lm.backend == ONNX
    module, name, _ = PARADIGMS[paradigm]
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls(lms[1], backend="onnx").lm is lms[1]  # a loaded model that runs the backend asked for
    with pytest.raises(InputError, match="runs backend torch, not onnx") as err:
        cls(lms[0], backend="onnx")
    assert err.value.field == "backend"
