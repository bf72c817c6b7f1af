"""Reading an integer relevance score from a causal LM's logits (ERank's fine-grained pointwise score).

Shared by the pointwise-LLM and groupwise rerankers: the score is the expected value of the
integer answer 0..``levels`` under the model's distribution over the answer token(s).
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def two_token_firsts(levels: int, whole: bool = False) -> list[int]:
    """First digits of the answers above 9 that are written as two tokens (none when ``whole``)."""
    if whole or levels < 10:
        return []
    return sorted({v // 10 for v in range(10, levels + 1)})


def expected_score(first_logits: np.ndarray, p_second: dict[int, np.ndarray], levels: int,
                   whole: bool = False) -> np.ndarray:
    """Expected integer score ``sum_k k * p(k)`` over the answers 0..``levels``, one per row.

    ``first_logits``: logits of the first answer token, over the answers 0..levels when every answer
    is one token (``whole``), else over the digits 0..9. ``p_second[f]``: probabilities of the digits
    0..9 as the token after first digit ``f`` (for :func:`two_token_firsts`): p(1x) = p("1") p(x | "1")
    and p(1) = p("1") (1 - sum_x p(x | "1")).
    """
    p_first = np.exp(log_softmax(first_logits.astype(np.float64)))
    if whole:
        return p_first @ np.arange(levels + 1, dtype=np.float64)
    values = np.arange(10, dtype=np.float64)
    if levels < 10:  # only 0..levels are answers
        p = p_first[:, : levels + 1]
        return (p / p.sum(axis=1, keepdims=True)) @ values[: levels + 1]
    expected = p_first @ values
    for first in two_token_firsts(levels):
        seconds = [v % 10 for v in range(10, levels + 1) if v // 10 == first]
        p_two = p_second[first][:, seconds]
        stop = np.clip(1.0 - p_two.sum(axis=1), 0.0, 1.0)
        two_values = np.array([first * 10 + s for s in seconds], dtype=np.float64)
        expected += p_first[:, first] * (p_two @ two_values + stop * first - first)
    return expected
