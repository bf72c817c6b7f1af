"""CausalLM: shared-prefix passes equal the separate prompts."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import InputError


@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    from rerank.llm import CausalLM

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
