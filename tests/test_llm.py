"""CausalLM: shared-prefix passes equal the separate prompts."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.retrieval.errors import InputError


@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    from rankwise.rerank.llm import CausalLM

    return CausalLM(str(tiny_causal_lm), batch_size=2)


def test_split_common_prefix_rebuilds_each_prompt(lm):
    prompts = ["the heart pumps blood [A]:", "the heart pumps blood [B]:", "the heart pumps blood [C]: 1"]
    ctx, tails = lm.split_common_prefix(prompts)
    assert ctx and all(tails)
    full = lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    assert [ctx + t for t in tails] == [list(x) for x in full]


def test_tail_logits_equal_the_separate_prompts(lm):
    groups = [lm.split_common_prefix([f"query gene {w} [A]:", f"query gene {w} [B]: 7", f"query gene {w} [C]:"])
              for w in ("protein", "a much longer context about the heart and blood", "x")]
    seen = {}
    for g, rows in lm.iter_tail_logits(groups, last=1):
        seen[g] = rows
    assert sorted(seen) == [0, 1, 2]
    for g, (ctx, tails) in enumerate(groups):
        prompts = [lm.tokenizer.decode(ctx + t) for t in tails]
        ids = lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        assert [list(x) for x in ids] == [ctx + t for t in tails]  # decoding round-trips for these texts
        expected = lm.next_token_logits(prompts)
        got = np.stack([r[-1] for r in seen[g]])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_tail_logits_refuse_a_group_over_max_length(lm):
    ctx, tails = lm.split_common_prefix(["a b c d [A]:", "a b c d [B]:"])
    old = lm.max_length
    lm.max_length = len(ctx) + 1
    try:
        with pytest.raises(InputError, match="max_length"):
            list(lm.iter_tail_logits([(ctx, tails)]))
    finally:
        lm.max_length = old


def test_cpu_batches_hold_at_most_batch_tokens_padded_tokens(tiny_causal_lm):
    from rankwise.rerank.llm import CPU_BATCH_TOKENS, CausalLM

    lm = CausalLM(str(tiny_causal_lm), device="cpu", batch_size=3)
    assert lm.batch_tokens == CPU_BATCH_TOKENS
    prompts = ["heart " * 40, "heart " * 38, "heart " * 5, "gene " * 4, "gene " * 3, "blood"]
    widths = [lm.n_tokens(p) for p in prompts]
    lm.batch_tokens = 2 * widths[0] - 1  # the two long prompts cannot share a batch; the short ones can, 3 at a time
    encoded, batches = lm._encode(prompts)
    assert batches == [[0], [1, 2], [3, 4, 5]]
    assert all(len(b) * len(encoded[b[0]]) <= lm.batch_tokens for b in batches if len(b) > 1)
    ids = list(range(10, 30))
    split = lm.next_token_logits(prompts, ids)
    lm.batch_tokens = None
    assert lm._encode(prompts)[1] == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_allclose(split, lm.next_token_logits(prompts, ids), atol=1e-4)  # batching changes no score
