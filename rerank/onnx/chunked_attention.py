"""One prompt's causal attention in query chunks, for ONNX Runtime's CPU ``GroupQueryAttention``.

ONNX Runtime's CPU kernel for ``GroupQueryAttention`` (1.32) multiplies every head's whole
``seq x seq`` score matrix, softmaxes each row over its causal part and zeroes the rest, so a
2,233-token FIRST window of SmolLM2-135M spends most of its time there (2.9 s of 4.1 s for the int8
graph on a 2-core Xeon, against about 1.1 s for torch's causal SDPA). :func:`chunk_prompt_attention`
rewrites the graph a CPU session runs (:class:`rankwise.retrieval.backend.session.OnnxSession`) so that a
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

    Chunk ``c`` holds queries ``[b_c, b_(c+1))`` with ``b_c = floor(c seq / chunks)`` (at least two
    rows each, since ``min_tokens >= 2 chunks``) and reads keys ``[0, b_(c+1))``: the earlier keys go
    in as the operator's past keys, the mask rows as its ``attention_bias``. ONNX Runtime accepts
    past keys with several query tokens only for a batch of one, so each node becomes an ``If``:
    chunks for one long prompt, the original node otherwise.
    The mask's chunks are sliced once for all layers. A graph that reads the operator's present
    keys/values, or whose attention has no mask or already reads past keys, is left as it is.
    """
    graph = model.graph
    targets = [n for n in graph.node if _rewritable(n)]
    if chunks <= 1 or not targets:
        return 0
    consumed = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    if any(out in consumed for n in targets for out in n.output[1:]):
        return 0
    rewriter = _Rewriter(chunks, max(min_tokens, 2 * chunks))  # every chunk at least two rows
    body: list[Any] = []  # the main graph's nodes, in order
    for node in graph.node:
        body.append(rewriter.chunked(node, body) if _rewritable(node) else node)
    del graph.node[:]
    graph.node.extend(body)
    graph.initializer.extend(rewriter.constants.values())
    return rewriter.rewritten


def _rewritable(node: Any) -> bool:
    """An attention node with a mask (``attention_bias``, input 10) and no past keys/values (inputs 3, 4)."""
    if node.op_type != OP_TYPE or node.domain != "com.microsoft":
        return False
    args = list(node.input) + [""] * (11 - len(node.input))
    return bool(args[10]) and not args[3] and not args[4]


class _Rewriter:
    """Builds the nodes of :func:`chunk_prompt_attention`: shared int64 constants, the mask's chunks
    (once per mask), and one ``If`` per attention node."""

    def __init__(self, chunks: int, min_tokens: int) -> None:
        self.chunks, self.min_tokens = chunks, min_tokens
        self.constants: dict[str, Any] = {}
        self.masks: dict[str, tuple[str, list[tuple[str, str, str, str, str]]]] = {}
        self.rewritten = 0

    def const(self, values: list[int]) -> str:
        from onnx import TensorProto, helper

        name = "rankwise_chunk_const_" + "_".join(str(v).replace("-", "m") for v in values)
        if name not in self.constants:
            self.constants[name] = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        return name

    @staticmethod
    def make(nodes: list[Any], op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def mask_chunks(self, bias: str, body: list[Any]) -> tuple[str, list[tuple[str, str, str, str, str]]]:
        """For the mask ``bias [b, 1, s, s]``: the ``If`` condition and, per chunk, ``(start, end, mask rows,
        total keys, seqlens_k)``; made once, in the main graph."""
        from onnx import TensorProto

        if bias in self.masks:
            return self.masks[bias]
        make, const, n = self.make, self.const, self.chunks
        p, zero = f"rankwise_chunk_{len(self.masks)}", const([0])
        shape = make(body, "Shape", [bias], f"{p}_shape")
        batch = make(body, "Slice", [shape, const([0]), const([1])], f"{p}_batch")
        seq = make(body, "Slice", [shape, const([2]), const([3])], f"{p}_seq")
        single = make(body, "Equal", [batch, const([1])], f"{p}_single")
        long = make(body, "GreaterOrEqual", [seq, const([self.min_tokens])], f"{p}_long")
        cond = make(body, "Squeeze", [make(body, "And", [single, long], f"{p}_and"), zero], f"{p}_cond")
        bounds: list[tuple[str, str, str, str, str]] = []
        for c in range(n):
            start = bounds[-1][1] if bounds else zero
            end = seq if c == n - 1 else make(body, "Div", [make(body, "Mul", [seq, const([c + 1])], f"{p}_scaled{c}"),
                                                             const([n])], f"{p}_end{c}")
            rows = make(body, "Slice", [bias, make(body, "Concat", [start, zero], f"{p}_from{c}", axis=0),
                                        make(body, "Concat", [end, end], f"{p}_to{c}", axis=0), const([2, 3])],
                        f"{p}_bias{c}")
            total = make(body, "Cast", [make(body, "Squeeze", [end, zero], f"{p}_total64_{c}")], f"{p}_total{c}",
                         to=TensorProto.INT32)
            seqlens = make(body, "Cast", [make(body, "Sub", [end, const([1])], f"{p}_last64_{c}")],
                           f"{p}_seqlens{c}", to=TensorProto.INT32)
            bounds.append((start, end, rows, total, seqlens))
        self.masks[bias] = (cond, bounds)
        return self.masks[bias]

    def chunked(self, node: Any, body: list[Any]) -> Any:
        """The ``If`` that replaces the attention ``node``: its chunks for one long prompt, ``node`` otherwise."""
        from onnx import TensorProto, helper

        make, const = self.make, self.const
        query, key, value, bias = node.input[0], node.input[1], node.input[2], node.input[10]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        cond, bounds = self.mask_chunks(bias, body)
        p = f"{node.name or node.output[0]}_chunked"
        then: list[Any] = []
        outs = []
        for c, (start, end, rows, total, seqlens) in enumerate(bounds):
            q, k, v = (make(then, "Slice", [t, start, end, const([1])], f"{p}_{c}_{i}")
                       for i, t in enumerate((query, key, value)))
            past = ["", ""]
            if c:  # keys and values before the chunk, [1, kv_heads, start, head_size]
                past = [make(then, "Transpose", [make(then, "Reshape", [
                    make(then, "Slice", [t, const([0]), start, const([1])], f"{p}_{c}_past{i}"),
                    const([1, 0, attrs["kv_num_heads"], -1])], f"{p}_{c}_heads{i}")], f"{p}_{c}_kv{i}",
                    perm=[0, 2, 1, 3]) for i, t in ((1, key), (2, value))]
            out = f"{p}_{c}_out"
            then.append(helper.make_node(OP_TYPE, [q, k, v, *past, seqlens, total, "", "", "", rows],
                                         [out, f"{p}_{c}_present_key", f"{p}_{c}_present_value"],
                                         name=f"{p}_{c}_gqa", domain="com.microsoft", **attrs))
            outs.append(out)
        result = make(then, "Concat", outs, f"{p}_result", axis=1)
        whole = helper.make_node(OP_TYPE, list(node.input), [f"{p}_whole", f"{p}_whole_key", f"{p}_whole_value"],
                                 name=f"{p}_whole_gqa", domain="com.microsoft", **attrs)

        def branch(name: str, nodes: list[Any], output: str) -> Any:
            return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])

        self.rewritten += 1
        return helper.make_node("If", [cond], [node.output[0]], name=f"{p}_if",
                                then_branch=branch(f"{p}_then", then, result),
                                else_branch=branch(f"{p}_else", [whole], f"{p}_whole"))
