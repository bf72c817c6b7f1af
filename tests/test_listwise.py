"""Listwise reranking (FIRST single-token and generated permutations), sliding windows, permutation parsing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rankwise.rerank.listwise import ListwiseReranker, window_schedule
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.permutation import parse_permutation, read_permutation
from rankwise.retrieval.errors import InputError
from rankwise.testing import corpus_texts

LINE = re.compile(r"^\[([A-Z])\] (.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> CausalLM:
    from rankwise.testing import build_tiny_causal_lm

    return CausalLM(str(build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")), batch_size=4)


class FakeLM:
    """The CausalLM methods the listwise reranker uses, with scripted outputs and a call log.

    FIRST logits: a passage containing "needle" gets the top logit, the others keep their order.
    """

    def __init__(self, generated: str = "") -> None:
        self.generated = generated
        self.calls: list[list[list[str]]] = []  # per call, per prompt: the window's passages

    def chat(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        return f"{system}\n{user}\n{assistant_prefix}"

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        words = text.split()
        return " ".join(words[:max_tokens]), len(words) > max_tokens

    def single_token_ids(self, labels):
        return [ord(x) for x in labels]

    def next_token_logits(self, prompts, token_ids=None, progress=False):
        windows = [[text for _, text in LINE.findall(p)] for p in prompts]
        self.calls.append(windows)
        out = np.full((len(prompts), len(token_ids)), -1e4, dtype=np.float32)
        for r, window in enumerate(windows):
            for k, text in enumerate(window):
                out[r, k] = 100.0 if "needle" in text else -float(k)
        return out

    def generate(self, prompts, max_new_tokens=64, progress=False):
        self.calls.append([[text for _, text in LINE.findall(p)] for p in prompts])
        return [self.generated] * len(prompts)


def _order(ranked):
    return [i for i, _ in ranked]


# --- the real (tiny) model: permutations, prompts, the FIRST read-out -------------------------


@pytest.mark.parametrize("mode", ["first", "generate"])
@pytest.mark.parametrize("n", [7, 45])
def test_returns_a_permutation(lm, mode, n):
    docs = corpus_texts()[:n]
    reranker = ListwiseReranker(lm, mode=mode, window=20, stride=10)
    ranked = reranker.rerank("airflow over a wing", docs)
    assert sorted(_order(ranked)) == list(range(n))
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    windows = 1 if n == 7 else 4
    assert reranker.stats.forward_passes == windows == reranker.stats.extra["windows"]
    assert reranker.stats.passages == n and reranker.stats.lists == 1


def test_first_reads_the_identifier_logits_after_the_bracket(lm):
    docs = corpus_texts()[:5]
    reranker = ListwiseReranker(lm, window=20)
    prompt = reranker.prompt("heart blood", docs)
    assert prompt.endswith("<|assistant|>\n[") and "[E] " + docs[4] in prompt and "heart blood" in prompt
    ids = lm.single_token_ids(list("ABCDE"))
    logits = lm.next_token_logits([prompt], ids)[0]
    expected = sorted(range(5), key=lambda k: (-logits[k], k))
    assert _order(reranker.rerank("heart blood", docs)) == expected


def test_passages_are_truncated_and_counted(lm):
    reranker = ListwiseReranker(lm, max_passage_tokens=8)
    ranked = reranker.rerank("q", ["wing " * 50, "short text", "heart " * 3])
    assert sorted(_order(ranked)) == [0, 1, 2]
    assert reranker.stats.truncated == 1


# --- the sliding window, with scripted logits --------------------------------------------------


def test_window_schedule_is_back_to_front():
    assert window_schedule(45, 20, 10) == [(25, 45), (15, 35), (5, 25), (0, 20)]
    assert window_schedule(30, 20, 10) == [(10, 30), (0, 20)]
    assert window_schedule(21, 20, 10) == [(1, 21), (0, 20)]
    assert window_schedule(7, 20, 10) == [(0, 7)]
    assert window_schedule(0, 20, 10) == []


def test_first_sliding_window_carries_the_needle_to_the_top():
    docs = [f"passage {i}" for i in range(45)]
    docs[37] = "passage 37 needle"
    short = [f"other {i}" for i in range(7)]
    short[4] = "other 4 needle"
    fake = FakeLM()
    reranker = ListwiseReranker(fake, mode="first", window=20, stride=10)
    scores = reranker.score([("q1", docs), ("q2", short), ("q3", docs)])

    for s in (scores[0], scores[2]):
        order = sorted(range(45), key=lambda i: -s[i])
        assert order == [37] + [i for i in range(45) if i != 37]  # the needle first, the rest in their order
    assert sorted(range(7), key=lambda i: -scores[1][i]) == [4, 0, 1, 2, 3, 5, 6]

    # 4 windows for each 45-list, 1 for the 7-list; one batched call per step across the queries
    assert reranker.stats.forward_passes == 9 == reranker.stats.extra["windows"]
    assert reranker.stats.extra["steps"] == 4
    assert [len(call) for call in fake.calls] == [3, 2, 2, 2]
    windows = [call[0] for call in fake.calls]  # query 1's windows, in order
    assert windows[0] == docs[25:45]  # the back of the list first
    needle = ["passage 37 needle"]
    assert windows[1] == docs[15:25] + needle + docs[25:34]  # [15, 35): the needle came up to 25
    assert windows[2] == docs[5:15] + needle + docs[15:24]  # [5, 25): ... to 15
    assert windows[3] == docs[:5] + needle + docs[5:19]  # [0, 20): ... to 5
    assert fake.calls[0][1] == short


def test_empty_and_single_lists_need_no_model_call():
    fake = FakeLM()
    reranker = ListwiseReranker(fake)
    assert reranker.rerank("q", []) == []
    assert reranker.score([("q", []), ("q", ["only"])]) == [[], [1.0]]
    assert fake.calls == [] and reranker.stats.forward_passes == 0


# --- generation and parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("text, n, expected", [
    ("[C] > [A] > [B]", 3, [2, 0, 1]),
    ("[C] > [A]", 4, [2, 0, 1, 3]),                      # missing ids appended in their order
    ("[B] > [B] > [A] > [B]", 3, [1, 0, 2]),             # repeated ids dropped
    ("[Z] > [C] > [E] > [A] > [F]", 5, [2, 4, 0, 1, 3]),  # [Z] and [F] are unknown for n=5
    ("I cannot rank these passages.", 4, [0, 1, 2, 3]),   # garbage
    ("", 3, [0, 1, 2]),                                   # empty
    ("[ B ] > [Cell] > [C", 3, [1, 2, 0]),                # spaces, a word, a cut-off last id
    ("[b] > [c]", 3, [0, 1, 2]),                          # identifiers are upper case
])
def test_parse_permutation_repairs(text, n, expected):
    assert parse_permutation(text, n) == expected
    assert sorted(expected) == list(range(n))


def test_read_permutation_says_when_it_repaired():
    assert read_permutation("[B] > [A] > [C]", 3) == ([1, 0, 2], False)
    assert read_permutation("[B] > [A]", 3) == ([1, 0, 2], True)
    assert read_permutation("[B] > [A] > [C] > [B]", 3) == ([1, 0, 2], True)
    with pytest.raises(InputError):
        parse_permutation("[A]", 27)


@pytest.mark.parametrize("generated", ["[C] > [A] > [A] > [Q]", "C] > [A] > [A] > [Q]"])
def test_generate_mode_parses_and_repairs(generated):
    fake = FakeLM(generated)
    reranker = ListwiseReranker(fake, mode="generate")
    docs = ["a", "b", "c", "d", "e"]
    assert _order(reranker.rerank("q", docs)) == [2, 0, 1, 3, 4]
    assert reranker.stats.forward_passes == 1 and reranker.stats.extra["repaired"] == 1
    assert fake.calls == [[docs]]


# --- bad settings ----------------------------------------------------------------------------


def test_bad_settings_are_input_errors():
    fake = FakeLM()
    with pytest.raises(InputError, match="identifiers"):
        ListwiseReranker(fake, window=27)
    ListwiseReranker(fake, window=26, stride=13)
    for kwargs in ({"mode": "sorted"}, {"window": 0}, {"stride": 0}, {"window": 5, "stride": 6},
                   {"max_passage_tokens": 0}, {"max_new_tokens": 0}):
        with pytest.raises(InputError):
            ListwiseReranker(fake, **kwargs)


def test_identifiers_that_are_not_one_token_are_refused(lm, monkeypatch):
    monkeypatch.setattr("rankwise.rerank.listwise.labels", lambda n: ["AB"] * n)
    with pytest.raises(InputError, match="not one"):
        ListwiseReranker(lm, window=3, stride=2)
