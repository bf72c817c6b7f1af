"""One prompt's causal attention in query chunks (rerank/onnx/chunked_attention.py): same numbers, less work."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.rerank.lm_engines import CAUSAL_LM

HEADS, KV_HEADS, DIM = 4, 2, 8


def attention_graph(consume_present: bool = False):
    """A graph of one GroupQueryAttention node as the causal-LM export writes it (mask as attention_bias)."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "s", width])
              for name, width in (("q", HEADS * DIM), ("k", KV_HEADS * DIM), ("v", KV_HEADS * DIM))]
    inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["b", 1, "s", "s"]))
    nodes = [
        helper.make_node("Shape", ["q"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Cast", ["seq"], ["total"], to=TensorProto.INT32),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Sub", ["seq", "one"], ["last"]),
        helper.make_node("Expand", ["last", "batch_1d"], ["last_b"]),
        helper.make_node("Cast", ["last_b"], ["seqlens"], to=TensorProto.INT32),
        helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens", "total", "", "", "", "bias"],
                         ["out", "present_key", "present_value"], name="gqa", domain="com.microsoft",
                         num_heads=HEADS, kv_num_heads=KV_HEADS, scale=DIM ** -0.5),
    ]
    nodes.insert(4, helper.make_node("Unsqueeze", ["batch", "zero_1d"], ["batch_1d"]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    if consume_present:
        outputs.append(helper.make_tensor_value_info("present_key", TensorProto.FLOAT, None))
    inits = [helper.make_tensor("one", TensorProto.INT64, [], [1]), helper.make_tensor("zero", TensorProto.INT64, [], [0]),
             helper.make_tensor("zero_1d", TensorProto.INT64, [1], [0])]
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])


def feeds(lengths: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random q/k/v for left-padded prompts of ``lengths`` and the additive mask the causal-LM graph builds."""
    from rankwise.rerank.onnx.features import causal_allowed
    from rankwise.retrieval.backend.features import left_padded

    rng = np.random.default_rng(seed)
    _, mask = left_padded([[1] * n for n in lengths], 0)
    b, s = mask.shape
    bias = np.where(causal_allowed(mask), 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None]
    return {"q": rng.standard_normal((b, s, HEADS * DIM), dtype=np.float32),
            "k": rng.standard_normal((b, s, KV_HEADS * DIM), dtype=np.float32),
            "v": rng.standard_normal((b, s, KV_HEADS * DIM), dtype=np.float32), "bias": bias}


@pytest.fixture(scope="module")
def sessions():
    import onnxruntime as ort

    from rankwise.rerank.onnx.chunked_attention import CHUNKS, chunk_prompt_attention

    plain = attention_graph()
    chunked = attention_graph()
    assert chunk_prompt_attention(chunked) == 1
    ifs = [n for n in chunked.graph.node if n.op_type == "If"]
    assert len(ifs) == 1 and "GroupQueryAttention" not in {n.op_type for n in chunked.graph.node}
    then = next(a.g for a in ifs[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node].count("GroupQueryAttention") == CHUNKS
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return tuple(ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                 for m in (plain, chunked))


@pytest.mark.parametrize("lengths", [[1], [15], [16], [17], [37], [100], [64], [40, 23], [30, 30, 2]])
def test_chunked_attention_gives_the_same_numbers(sessions, lengths):
    plain, chunked = sessions
    feed = feeds(lengths)
    want, got = plain.run(None, feed)[0], chunked.run(None, feed)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6


def test_a_left_padded_single_prompt_masks_its_padding(sessions):
    # one prompt that still carries left padding (a row cut out of a batch): padding keys stay masked
    plain, chunked = sessions
    feed = feeds([50, 33])
    row = {k: v[1:2] for k, v in feed.items()}
    assert np.abs(chunked.run(None, row)[0] - plain.run(None, row)[0]).max() <= 1e-6
    assert np.abs(chunked.run(None, row)[0] - plain.run(None, feed)[0][1:2]).max() <= 1e-5


def test_a_graph_that_reads_the_present_keys_is_left_alone():
    from rankwise.rerank.onnx.chunked_attention import chunk_prompt_attention

    model = attention_graph(consume_present=True)
    assert chunk_prompt_attention(model) == 0
    assert [n.op_type for n in model.graph.node].count("GroupQueryAttention") == 1
    assert chunk_prompt_attention(attention_graph(), chunks=1) == 0


def test_the_causal_lm_session_runs_chunked_on_the_cpu(tiny_causal_lm, tmp_path):
    from rankwise.rerank.llm import CausalLM
    from rankwise.retrieval.backend.cache import export_model, read_export
    from rankwise.retrieval.backend.session import OnnxSession

    export = read_export(export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path / "lm").folder, kind="causal-lm")
    # parity was checked on the chunked graph, each probe prompt alone
    assert export.manifest["parity"]["fp32"]["chunked_attention"] == 2
    assert export.manifest["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert OnnxSession(export.file(), device="cpu").chunked == 0  # only when asked: encoders never are
    torch_lm, onnx_lm = CausalLM(str(tiny_causal_lm), device="cpu"), CausalLM(str(export.folder), backend="onnx")
    assert onnx_lm.session.chunked == 2 and onnx_lm.batch_size == 1
    prompt = " ".join(["query heart [A] yes no [B] > [C] document search index"] * 8)
    assert onnx_lm.n_tokens(prompt) >= 64
    ids = list(range(10, 40))
    want, got = torch_lm.next_token_logits([prompt], ids), onnx_lm.next_token_logits([prompt], ids)
    assert np.abs(want - got).max() <= 1e-4
