"""Listwise modes eliminate (IRanker) and reason (ReasonRank): elimination order, early stop, parsing."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rankwise.rerank.elimination import EliminationReranker
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.reasoning import ReasoningReranker
from rankwise.rerank.spec import load_reranker, parse_spec
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.run import Run
from rankwise.testing import corpus_texts
from tests._helpers import FakeChatLM

LINE = re.compile(r"^\[([A-Z])\] (.*)$", re.MULTILINE)
SCORE = re.compile(r"score (-?\d+)")


class PlantedLM(FakeChatLM):
    """FIRST-style logits from the passages: "needle" is the best; otherwise ``score N`` (or earlier = better).

    Asked for the least relevant passage, the logits are negated, so worst and best see one order.
    """

    def __init__(self) -> None:
        self.prompts = 0
        self.calls: list[int] = []

    def next_token_logits(self, prompts, token_ids=None, progress=False):
        self.prompts += len(prompts)
        self.calls.append(len(prompts))
        out = np.full((len(prompts), len(token_ids)), -1e4, dtype=np.float32)
        for r, p in enumerate(prompts):
            sign = -1.0 if "least relevant" in p else 1.0
            for k, (_, text) in enumerate(LINE.findall(p)):
                found = SCORE.search(text)
                value = 1000.0 if "needle" in text else float(found.group(1)) if found else -float(k)
                out[r, k] = sign * value
        return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rankwise.testing import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


def _order(scores):
    return sorted(range(len(scores)), key=lambda i: -scores[i])


# --- eliminate ----------------------------------------------------------------------------


@pytest.mark.parametrize("eliminate", ["worst", "best"])
def test_planted_needle_at_37_of_45_comes_first(eliminate):
    docs = [f"passage {i}" for i in range(45)]
    docs[37] = "passage 37 needle"
    fake = PlantedLM()
    reranker = EliminationReranker(fake, eliminate=eliminate, window=20, stride=10)
    scores = reranker.score([("q", docs), ("q2", docs[:7])])
    assert _order(scores[0])[0] == 37
    assert _order(scores[0]) == [37] + [i for i in range(45) if i != 37]
    assert _order(scores[1]) == list(range(7))
    # worst: windows (25,45),(15,35),(5,25) pass on 10, 10, 15 passages: 10 + 10 + 5 removals, then 19
    expected = 10 + 10 + 5 + 19 if eliminate == "worst" else 4 * 19
    assert reranker.stats.forward_passes == expected + 6 == fake.prompts
    # steps batch across queries: the 7-list's 6 passes ride along with the 45-list's first window
    assert fake.calls[0] == 2 and len(fake.calls) == reranker.stats.extra["steps"]


@pytest.mark.parametrize("n", [12, 20, 45])
def test_worst_and_best_agree_on_deterministic_logits(n):
    rng = np.random.default_rng(n)
    values = rng.permutation(1000)[:n]
    docs = [f"doc {i} score {v}" for i, v in enumerate(values)]
    worst = EliminationReranker(PlantedLM(), eliminate="worst").score([("q", docs)])[0]
    best = EliminationReranker(PlantedLM(), eliminate="best").score([("q", docs)])[0]
    assert _order(worst) == _order(best)
    truth = sorted(range(n), key=lambda i: -values[i])
    if n <= 20:
        assert _order(best) == truth  # one window: the exact order
    assert _order(best)[:10] == truth[:10]  # a sweep of stride 10 carries the true top-10 to the top


def test_k_stops_once_the_top_k_is_fixed():
    rng = np.random.default_rng(0)
    docs = [f"doc {i} score {v}" for i, v in enumerate(rng.permutation(100)[:20])]
    full, top = PlantedLM(), PlantedLM()
    a = EliminationReranker(full, eliminate="best").score([("q", docs)])[0]
    b = EliminationReranker(top, eliminate="best", k=10).score([("q", docs)])[0]
    assert full.prompts == 19 and top.prompts == 10
    assert _order(a)[:10] == _order(b)[:10]
    worst = PlantedLM()
    EliminationReranker(worst, eliminate="worst", k=10).score([("q", docs)])
    assert worst.prompts == 19  # bottom-up elimination fixes the top last: k saves nothing
    long = [f"doc {i} score {v}" for i, v in enumerate(rng.permutation(1000)[:45])]
    lm45 = PlantedLM()
    EliminationReranker(lm45, eliminate="best", k=10).score([("q", long)])
    assert lm45.prompts == 10 + 10 + 15 + 10


def test_eliminate_on_a_tiny_llama_returns_a_permutation_and_reads_remaining_logits(tiny):
    lm = CausalLM(str(tiny), batch_size=4)
    docs = corpus_texts()[:6]
    reranker = EliminationReranker(lm, eliminate="best", k=1)
    prompt = reranker.prompt("heart blood", docs)
    assert prompt.endswith("<|assistant|>\n[") and "most relevant" in prompt
    logits = lm.next_token_logits([prompt], lm.single_token_ids(list("ABCDEF")))[0]
    ranked = reranker.rerank("heart blood", docs)
    assert ranked[0][0] == int(np.argmax(logits)) and sorted(i for i, _ in ranked) == list(range(6))
    assert reranker.stats.forward_passes == 1
    via_spec = load_reranker(f"listwise:{tiny},mode=eliminate,eliminate=worst,window=8,stride=4")
    assert isinstance(via_spec, EliminationReranker) and via_spec.eliminate == "worst"
    assert sorted(i for i, _ in via_spec.rerank("wing", corpus_texts()[:11])) == list(range(11))


# --- reason ------------------------------------------------------------------------------


class ScriptedLM(PlantedLM):
    """generate() answers from a script: one list of texts per call."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.seen: list[list[str]] = []

    def generate(self, prompts, max_new_tokens=64, progress=False):
        self.seen.append(list(prompts))
        texts = self.script.pop(0)
        assert len(texts) == len(prompts)
        return texts


@pytest.mark.parametrize("reasoning, forced, n, expected", [
    ("[A] looks good. </think>\n[C] > [A] > [B]", None, 3, [2, 0, 1]),  # ids in the reasoning are not the answer
    ("C matches </think> [C]", None, 4, [2, 0, 1, 3]),                   # missing ids appended
    ("</think> [B] > [B] > [A] > [B]", None, 3, [1, 0, 2]),              # repeated ids dropped
    ("A, B and C all talk about the heart and", "C] > [B", 3, [2, 1, 0]),  # never closes: forced answer
    ("endless thinking", "no idea", 3, [0, 1, 2]),                       # never closes, no ids: input order
    ("done </think> I cannot say", "B]", 3, [1, 0, 2]),                  # closed, no ranking: forced
])
def test_reason_parses_after_the_marker(reasoning, forced, n, expected):
    fake = ScriptedLM([[reasoning]] + ([[forced]] if forced is not None else []))
    reranker = ReasoningReranker(fake, max_reasoning_tokens=32)
    docs = [f"passage {i}" for i in range(n)]
    assert [i for i, _ in reranker.rerank("heart", docs)] == expected
    record = reranker.records[0]
    assert record["permutation"] == expected and record["forced"] == (forced is not None)
    assert record["closed"] == ("</think>" in reasoning) and "</think>" not in record["reasoning"]
    assert reranker.stats.forward_passes == 1 + (forced is not None)
    if forced is not None:
        assert fake.seen[1][0].endswith(reasoning.partition("</think>")[0] + "</think>\n[")
    assert fake.seen[0][0].endswith("<think>")


def test_reason_on_a_tiny_llama_and_save_reasoning(tmp_path, capsys, tiny, synthetic_beir):
    from rankwise.cli import main

    Run({"q0": [(f"d{i}", 10.0 - i) for i in range(6)], "q1": [("d7", 2.0), ("d8", 1.0)]}).write(tmp_path / "run.trec")
    args = ["rerank", str(tmp_path / "run.trec"), "--queries", str(synthetic_beir), "--corpus", str(synthetic_beir),
            "--reranker", f"listwise:{tiny},mode=reason,max_reasoning_tokens=8", "--depth", "6",
            "--out", str(tmp_path / "out.trec"), "--save-reasoning", str(tmp_path / "why.jsonl")]
    main(args)
    out = Run.read(tmp_path / "out.trec")
    assert sorted(d for d, _ in out["q0"]) == [f"d{i}" for i in range(6)]
    rows = [json.loads(line) for line in (tmp_path / "why.jsonl").read_text().splitlines()]
    assert sorted(r["query_id"] for r in rows) == ["q0", "q1"]
    for r in rows:
        assert sorted(r["permutation"]) == list(range(r["passages"])) and isinstance(r["reasoning"], str)
        assert set(r) >= {"query", "reasoning", "closed", "forced", "answer", "repaired"}
    assert not list(tmp_path.glob(".why.jsonl.*"))  # the atomic write left no temp file
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # --save-reasoning with a mode that does not reason
        main(args[:7] + [f"listwise:{tiny},mode=first"] + args[8:])
    assert info.value.code == 2 and "mode=reason" in capsys.readouterr().err


# --- specs ----------------------------------------------------------------------------------


def test_spec_options_of_the_new_modes():
    assert parse_spec("listwise:m,mode=eliminate,eliminate=best,k=10").options == {
        "mode": "eliminate", "eliminate": "best", "k": 10}
    assert parse_spec("listwise:m,mode=reason,max_reasoning_tokens=64").options["max_reasoning_tokens"] == 64
    for bad, says in [("listwise:m,eliminate=best", "needs mode=eliminate"),
                      ("listwise:m,mode=reason,k=3", "needs mode=eliminate"),
                      ("listwise:m,mode=first,max_reasoning_tokens=5", "needs mode=reason"),
                      ("listwise:m,mode=eliminate,temperature=1", "is not one of")]:
        with pytest.raises(InputError, match=says):
            parse_spec(bad)
    fake = PlantedLM()
    for kwargs in ({"eliminate": "middle"}, {"k": 0}, {"window": 1}, {"stride": 20}, {"mode": "first"}):
        with pytest.raises(InputError):
            EliminationReranker(fake, **kwargs)
    for kwargs in ({"max_reasoning_tokens": 0}, {"mode": "generate"}):
        with pytest.raises(InputError):
            ReasoningReranker(fake, **kwargs)
