"""One prompt's causal attention in query chunks, for ONNX Runtime's CPU ``GroupQueryAttention``.

ONNX Runtime's CPU kernel for ``GroupQueryAttention`` (1.32) multiplies every head's whole
``seq x seq`` score matrix, softmaxes each row over its causal part and zeroes the rest, so a
2,233-token FIRST window of SmolLM2-135M spends most of its time there (2.9 s of 4.1 s for the int8
graph on a 2-core Xeon, against about 1.1 s for torch's causal SDPA). :func:`chunk_prompt_attention`
rewrites the graph a CPU session runs (:class:`retrieval.backend.session.OnnxSession`) so that a
single prompt's queries go in :data:`CHUNKS` chunks, each reading only the keys up to its own end
through the operator's past-key input, as chunked prefill does: ``(n + 1) / 2n`` of the score
matrix, and the same numbers, since every row's softmax covers the same keys. The exported file
is unchanged; the CUDA provider runs it as it is.
"""

from __future__ import annotations

from typing import Any

OP_TYPE = "GroupQueryAttention"
CHUNKS = 8  # query chunks of one prompt
CHUNK_MIN_TOKENS = 2 * CHUNKS  # shorter prompts, and batches of several, keep the single operator


def chunk_prompt_attention(model: Any, *, chunks: int = CHUNKS, min_tokens: int = CHUNK_MIN_TOKENS) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place) so that each :data:`OP_TYPE` node reads a single
    prompt of at least ``min_tokens`` tokens in ``chunks`` query chunks; returns how many nodes it rewrote.

    Chunk ``c`` holds queries ``[c L, (c + 1) L)`` (``L = ceil(seq / chunks)``; the sequence is padded
    at its end, where causal rows never look, and the padding is cut off again) and reads keys
    ``[0, (c + 1) L)``: the earlier keys go in as the operator's past keys, the mask rows as its
    ``attention_bias``. ONNX Runtime accepts past keys with several query tokens only for a batch of
    one, so each node becomes an ``If``: chunks for one long prompt, the original node otherwise.
    The mask's chunks are sliced once for all layers.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    targets = [n for n in graph.node if n.op_type == OP_TYPE and n.domain == "com.microsoft"]
    if chunks <= 1 or not targets:
        return 0
    consumed = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    if any(out in consumed for n in targets for out in n.output[1:]):
        return 0  # something reads the present keys/values: leave the graph alone
    int64 = TensorProto.INT64
    constants: dict[str, Any] = {}

    def const(values: list[int]) -> str:
        name = "rankwise_chunk_const_" + "_".join(str(v).replace("-", "m") for v in values)
        if name not in constants:
            constants[name] = helper.make_tensor(name, int64, [len(values)], values)
        return name

    def make(nodes: list, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    shared: dict[str, tuple[str, str, str, list[tuple[str, str, str, str, str]]]] = {}
    rewritten = 0
    body: list = []  # the main graph's new nodes, in order
    for node in graph.node:
        if node not in targets:
            body.append(node)
            continue
        args = list(node.input) + [""] * (11 - len(node.input))
        query, key, value, bias = args[0], args[1], args[2], args[10]
        if not bias or args[3] or args[4]:  # no mask to slice, or already reading past keys
            body.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if bias not in shared:  # once per mask: the condition, the chunk bounds and the mask's chunks
            p = f"rankwise_chunk_{len(shared)}"
            shape = make(body, "Shape", [bias], f"{p}_shape")
            batch = make(body, "Slice", [shape, const([0]), const([1])], f"{p}_batch")
            seq = make(body, "Slice", [shape, const([2]), const([3])], f"{p}_seq")
            single = make(body, "Equal", [batch, const([1])], f"{p}_single")
            long = make(body, "GreaterOrEqual", [seq, const([min_tokens])], f"{p}_long")
            cond = make(body, "Squeeze", [make(body, "And", [single, long], f"{p}_and"), const([0])], f"{p}_cond")
            length = make(body, "Div", [make(body, "Add", [seq, const([chunks - 1])], f"{p}_up"), const([chunks])],
                          f"{p}_length")
            extra = make(body, "Sub", [make(body, "Mul", [length, const([chunks])], f"{p}_padded"), seq], f"{p}_extra")
            zero = const([0])
            padded_bias = make(body, "Pad", [bias, make(body, "Concat", [zero] * 6 + [extra, extra], f"{p}_bias_pads",
                                                        axis=0)], f"{p}_bias")
            pads = make(body, "Concat", [zero] * 4 + [extra, zero], f"{p}_pads", axis=0)
            bounds = []
            for c in range(chunks):
                start = bounds[-1][1] if bounds else zero
                end = make(body, "Mul", [length, const([c + 1])], f"{p}_end{c}") if c else length
                rows = make(body, "Slice", [padded_bias, make(body, "Concat", [start, zero], f"{p}_from{c}", axis=0),
                                            make(body, "Concat", [end, end], f"{p}_to{c}", axis=0),
                                            const([2, 3])], f"{p}_bias{c}")
                total = make(body, "Cast", [make(body, "Squeeze", [end, zero], f"{p}_total64_{c}")],
                             f"{p}_total{c}", to=TensorProto.INT32)
                seen = make(body, "Cast", [make(body, "Sub", [end, const([1])], f"{p}_last64_{c}")],
                            f"{p}_seqlens{c}", to=TensorProto.INT32)
                bounds.append((start, end, rows, total, seen))
            shared[bias] = (cond, seq, pads, bounds)
        cond, seq, pads, bounds = shared[bias]
        p = f"{node.name or node.output[0]}_chunked"
        then: list = []
        padded = [make(then, "Pad", [t, pads], f"{p}_{i}") for i, t in enumerate((query, key, value))]
        outs = []
        for c, (start, end, rows, total, seen) in enumerate(bounds):
            q, k, v = (make(then, "Slice", [t, start, end, const([1])], f"{p}_{c}_{i}") for i, t in enumerate(padded))
            past = ["", ""]
            if c:
                past = [make(then, "Transpose", [make(then, "Reshape", [
                    make(then, "Slice", [t, const([0]), start, const([1])], f"{p}_{c}_past{i}"),
                    const([1, 0, attrs["kv_num_heads"], -1])], f"{p}_{c}_heads{i}")], f"{p}_{c}_kv{i}", perm=[0, 2, 1, 3])
                    for i, t in ((1, padded[1]), (2, padded[2]))]
            out = f"{p}_{c}_out"
            then.append(helper.make_node(OP_TYPE, [q, k, v, *past, seen, total, "", "", "", rows],
                                         [out, f"{p}_{c}_present_key", f"{p}_{c}_present_value"],
                                         name=f"{p}_{c}_gqa", domain="com.microsoft", **attrs))
            outs.append(out)
        joined = make(then, "Concat", outs, f"{p}_joined", axis=1)
        result = make(then, "Slice", [joined, const([0]), seq, const([1])], f"{p}_result")
        whole = helper.make_node(OP_TYPE, list(node.input), [f"{p}_whole", f"{p}_whole_key", f"{p}_whole_value"],
                                 name=f"{p}_whole_gqa", domain="com.microsoft", **attrs)

        def branch(name: str, nodes: list, output: str) -> Any:
            return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])

        body.append(helper.make_node("If", [cond], [node.output[0]], name=f"{p}_if",
                                     then_branch=branch(f"{p}_then", then, result),
                                     else_branch=branch(f"{p}_else", [whole], f"{p}_whole")))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(body)
    graph.initializer.extend(constants.values())
    return rewritten
