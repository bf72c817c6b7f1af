"""int8 for causal LMs: SmoothQuant folded exactly into the norms, down projections and the head left float."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankwise.rerank.lm_engines import CAUSAL_LM
from rankwise.retrieval.backend.value import ONNX, ONNX_INT8


@pytest.fixture()
def lm_and_calibration(tiny_causal_lm):
    from rankwise.rerank.onnx.causal_lm import calibration_features
    from rankwise.rerank.onnx.causal_lm import load_causal_lm

    lm, tokenizer = load_causal_lm(str(tiny_causal_lm))
    return lm, calibration_features(tokenizer)


def _logits(lm, features):
    with torch.inference_mode():
        return torch.cat([lm(**f, logits_to_keep=1).logits[:, -1] for f in features])


def test_smoothing_is_exact_and_shrinks_the_outlier_channel(lm_and_calibration):
    from rankwise.rerank.onnx.smooth import smooth_causal_lm

    lm, features = lm_and_calibration
    norm = lm.model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight[5] = 64.0  # an outlier channel at the input of layer 0's q/k/v
    before_norm = norm.weight.detach().clone()
    before_q = lm.model.layers[0].self_attn.q_proj.weight.detach().clone()
    before = _logits(lm, features)

    record = smooth_causal_lm(lm, features, alpha=0.8)

    assert record == {"alpha": 0.8, "layers": 2, "skipped": None}
    assert torch.allclose(_logits(lm, features), before, rtol=0, atol=1e-5)
    factors = before_norm / norm.weight.detach()
    assert torch.equal(torch.exp2(torch.round(torch.log2(factors))), factors)  # powers of two
    assert factors[5] >= 8 * factors.median()  # the outlier channel is divided the most
    # the weight columns absorb exactly what the norm gave up
    assert torch.equal(lm.model.layers[0].self_attn.q_proj.weight, before_q * factors)


def test_smoothing_restores_a_model_it_cannot_fold(lm_and_calibration):
    from rankwise.rerank.onnx.smooth import smooth_causal_lm

    lm, features = lm_and_calibration

    class OnePlusNorm(torch.nn.Module):  # Gemma's RMSNorm: x * (1 + weight), which dividing the weight does not scale
        def __init__(self, width: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((width,), 0.5))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)

    lm.model.layers[1].post_attention_layernorm = OnePlusNorm(lm.config.hidden_size)
    state = {k: v.clone() for k, v in lm.state_dict().items()}

    record = smooth_causal_lm(lm, features)

    assert record["layers"] == 0 and record["skipped"].startswith("not exact")
    assert all(torch.equal(v, state[k]) for k, v in lm.state_dict().items())


def test_smoothing_skips_a_model_without_pre_norm_projections(lm_and_calibration):
    from rankwise.rerank.onnx.smooth import smooth_causal_lm

    lm, features = lm_and_calibration
    del lm.model.layers[0].mlp.gate_proj, lm.model.layers[0].mlp.up_proj
    assert smooth_causal_lm(lm, features)["skipped"].startswith("no pre-norm decoder layers")


def test_int8_causal_lm_keeps_down_projections_and_head_float(tiny_causal_lm, tmp_path):
    import onnx

    from rankwise.rerank.llm import CausalLM
    from rankwise.retrieval.backend.cache import export_model, read_export
    from rankwise.retrieval.backend.quantize import nodes_of_modules

    folder = export_model(str(tiny_causal_lm), CAUSAL_LM, tmp_path / "lm", backend="onnx-int8").folder
    export = read_export(folder, backend=ONNX_INT8, kind="causal-lm")
    assert export.manifest["settings"]["smoothquant"] == {"alpha": 0.8, "layers": 2, "skipped": None}
    assert export.manifest["parity"]["fp32"]["max_abs_diff"] <= 1e-4  # against the model before smoothing

    fp32 = nodes_of_modules(export.file(ONNX), ("mlp.down_proj",))
    assert len(fp32) == 2  # one per layer, found by the torch module they came from
    nodes = onnx.load(str(export.file(ONNX_INT8)), load_external_data=False).graph.node
    matmuls = {n.name for n in nodes if n.op_type == "MatMul"}
    assert set(fp32) <= matmuls  # the down projections stay float MatMuls
    assert any(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for n in nodes)  # the rest is int8
    assert "DequantizeLinear" not in {n.op_type for n in nodes}  # no Gather quantized: the tied head stays float

    torch_lm, onnx_lm = CausalLM(str(tiny_causal_lm), device="cpu"), CausalLM(str(folder), backend="onnx-int8")
    prompts, ids = ["query heart [A] yes", "no [B] > [C] 1 2 3 query document"], list(range(10, 30))
    want, got = torch_lm.next_token_logits(prompts, ids), onnx_lm.next_token_logits(prompts, ids)
    assert np.corrcoef(want.ravel(), got.ravel())[0, 1] > 0.99
    # activation scales are per batch, so the CPU graph reads one prompt at a time: a prompt's logits do not depend on its batchmates
    assert onnx_lm.batch_size == 1
    assert np.array_equal(got, np.concatenate([onnx_lm.next_token_logits([p], ids) for p in prompts]))
