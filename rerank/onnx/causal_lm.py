"""The causal-LM kind of the ONNX export: what a causal LM reranker needs beyond :mod:`rankwise.retrieval.backend`.

:func:`prepare_causal_lm` is the ``prepare`` of :data:`rankwise.rerank.lm_engines.CAUSAL_LM`, so
``export_model(..., CAUSAL_LM, ...)`` and :class:`rankwise.rerank.llm.CausalLM`'s ONNX backend get the fused
attention, the chunked CPU attention, SmoothQuant smoothing and its calibration prompts (FIRST-style listwise prompts, Reddy et al., 2024) from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.rerank.onnx.features import prompt_features
from rankwise.retrieval.backend.build import Prepared, _torch_inputs
from rankwise.retrieval.backend.calibration import bundled
from rankwise.retrieval.backend.export import export_graph
from rankwise.retrieval.backend.parity import PROBE_TEXTS
from rankwise.retrieval.backend.sources import gguf_location
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.models import resolve_model

OP_TYPES = ("MatMul",)  # what int8 quantizes in a causal LM (:mod:`rankwise.retrieval.backend.quantize`)
_CAUSAL_LM_CLASSES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_causal_lm_head(path: str) -> None:
    """Refuse a checkpoint whose recorded architectures hold no causal-LM class (a cross-encoder, a
    bi-encoder): loaded as a causal LM it would get a random language-model head."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return  # a GGUF file or a hub name: transformers decides
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return
    if archs and not any(cls in a for a in archs for cls in _CAUSAL_LM_CLASSES):
        raise InputError(f"holds {', '.join(archs)}, not a causal LM (no *ForCausalLM architecture); export a "
                         "cross-encoder with --kind cross-encoder, a bi-encoder with --kind encoder",
                         path=config, field="architectures")


def load_causal_lm(name_or_path: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM (Hugging Face folder, hub name or GGUF file), float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, gguf = gguf_location(resolve_model(name_or_path))
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if not gguf:
        check_causal_lm_head(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a causal LM: {str(err).splitlines()[0]}", path=path) from None
    return model.eval(), tokenizer


LM_INPUTS = ("input_ids", "allowed", "position_ids", "positions", "token_ids")


def prepare_causal_lm(model: str, max_length: int | None) -> Prepared:
    """A causal LM: logits gathered at given positions and token ids; smoothed for int8 after the
    reference logits are taken (:mod:`rankwise.rerank.onnx.smooth`), so parity also checks the smoothing; the
    attention exported fused (:mod:`rankwise.rerank.onnx.attention`) and run chunked on the CPU
    (:mod:`rankwise.rerank.onnx.chunked_attention`)."""
    import torch

    from rankwise.rerank.onnx.chunked_attention import chunk_prompt_attention
    from rankwise.rerank.onnx.graph import CausalLMGraph
    from rankwise.rerank.onnx.smooth import FLOAT_MODULES, smooth_causal_lm

    lm, tokenizer = load_causal_lm(model)
    what = f"causal LM {model!r}"
    try:
        graph = CausalLMGraph(lm).eval()
    except ValueError as err:
        raise InputError(f"cannot export {what}: part 'lm_head': {err}", field="model") from None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise InputError(f"cannot export {what}: part 'tokenizer' has neither a pad nor an eos token", field="model")
    vocab = int(lm.get_output_embeddings().weight.shape[0])
    positions = getattr(lm.config, "max_position_embeddings", None) or getattr(lm.config, "n_positions", None)
    longest = min(256, int(positions)) if positions else 256  # a probe no longer than the model's positions
    sequences = [tokenizer.encode(t, add_special_tokens=False)[:longest] or [pad] for t in PROBE_TEXTS]
    probe = prompt_features(sequences, pad)
    probe["token_ids"] = np.arange(vocab, dtype=np.int64)
    ids, mask = probe["input_ids"], (probe["allowed"][:, -1, :]).astype(np.int64)
    with torch.inference_mode():
        logits = lm(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    position_ids=torch.from_numpy(probe["position_ids"]), logits_to_keep=1).logits[:, -1, :]
    reference = logits.float().numpy()[:, None, :]
    smoothing = smooth_causal_lm(lm, calibration_features(tokenizer))
    example = prompt_features(sequences[:2], pad)
    example["token_ids"] = np.arange(8, dtype=np.int64)
    eos = lm.generation_config.eos_token_id if lm.generation_config is not None else None
    eos = [eos] if isinstance(eos, int) else list(eos or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []))
    settings = {"vocab_size": vocab, "pad_token_id": int(pad), "eos_token_ids": [int(e) for e in eos],
                "max_length": max_length, "smoothquant": smoothing}
    dynamic = {"input_ids": (0, 1), "allowed": (0, 1, 2), "position_ids": (0, 1), "positions": (0, 1),
               "token_ids": (0,)}
    return Prepared(graph, tokenizer, _torch_inputs(example), dynamic, "selected_logits", settings, probe, reference,
                    False, lambda out: out[:, 0, :64], what,
                    fused_export=lambda prepared, out: _export_fused(prepared, lm, out),
                    session_rewrite=chunk_prompt_attention, rewrite_name="chunked_attention",
                    batch_inputs=tuple(k for k in LM_INPUTS if k != "token_ids"),
                    keep_float=FLOAT_MODULES if smoothing["layers"] else (), int8_ops=OP_TYPES)


def _export_fused(prepared: Prepared, lm: Any, out: Path) -> dict[str, int]:
    """The fp32 graph with the attention as ``GroupQueryAttention`` (:mod:`rankwise.rerank.onnx.attention`); its counts."""
    from rankwise.rerank.onnx.attention import IMPLEMENTATION, OP_TYPE, attention_implementation, translations
    from rankwise.retrieval.backend.optimize import count_ops

    with attention_implementation(lm, IMPLEMENTATION):
        export_graph(prepared.graph, prepared.inputs, prepared.dynamic, prepared.output, out, prepared.what,
                     translations=translations())
    counts = count_ops(out, (OP_TYPE,))
    if not counts:
        raise ValueError(f"no {OP_TYPE} in the exported graph")
    return counts


def calibration_features(tokenizer: Any, passages: int = 20) -> list[dict[str, Any]]:
    """SmoothQuant's calibration input: FIRST-style listwise prompts, one per query of
    the bundled calibration file (:mod:`rankwise.retrieval.backend.calibration`), each ranking
    ``passages`` of its passages -- the shape and length (about 2,000 tokens) of what the LLM rerankers
    send -- in the model's chat template when it has one."""
    queries, texts = bundled()
    features = []
    for n, query in enumerate(queries):
        chosen = [texts[(n * passages + i) % len(texts)] for i in range(passages)]
        body = "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(chosen))
        user = (f"I will provide you with {passages} passages, each indicated by a numerical identifier []. "
                f"Rank the passages based on their relevance to the search query: {query}\n\n{body}\n\n"
                f"Search query: {query}\nRank the {passages} passages above. Answer with the identifiers.")
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                 add_generation_prompt=True)
        else:
            text = user
        features.append(dict(tokenizer(text, return_tensors="pt", add_special_tokens=False)))
    return features
