"""Pointwise rerankers (cross-encoder, LLM yes/no, ERank), the Reranker protocol, specs, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.rerank.base import Reranker
from rankwise.rerank.cross_encoder import CrossEncoderReranker
from rankwise.rerank.llm import CausalLM
from rankwise.rerank.pointwise import LLMPointwiseReranker
from rankwise.rerank.spec import load_reranker, parse_spec
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.formats import Corpus
from rankwise.retrieval.run import Run

DOCS = ["protein cell gene", "wing airflow pressure", "heart blood", "shock wave boundary layer", "vaccine virus"]


@pytest.fixture(scope="module")
def lm(tiny_causal_lm) -> CausalLM:
    return CausalLM(str(tiny_causal_lm), batch_size=3)


def _is_permutation(ranked, n):
    return sorted(i for i, _ in ranked) == list(range(n))


def test_cross_encoder_scores_match_sentence_transformers(tiny_cross_encoder):
    import torch
    from sentence_transformers import CrossEncoder

    reranker = CrossEncoderReranker(str(tiny_cross_encoder), batch_size=2)
    ranked = reranker.rerank("airflow over a wing", DOCS)
    assert _is_permutation(ranked, len(DOCS))
    reference = CrossEncoder(str(tiny_cross_encoder)).predict([("airflow over a wing", d) for d in DOCS],
                                                             activation_fn=torch.nn.Identity())
    assert dict(ranked) == pytest.approx(dict(enumerate(np.asarray(reference, dtype=float))), abs=1e-5)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert reranker.rerank("q", []) == []


def test_cross_encoder_counts_truncation(tiny_cross_encoder):
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    reranker.rerank("q", ["wing " * 200, "short"])
    assert reranker.stats.truncated == 1 and reranker.stats.passages == 2


def test_model_without_classification_head_is_refused(tiny_encoder):
    with pytest.raises(InputError, match="no sequence-classification head"):
        CrossEncoderReranker(str(tiny_encoder) + "-hf")


@pytest.mark.parametrize("mode", ["yesno", "erank"])
def test_llm_pointwise_returns_a_permutation(lm, mode):
    reranker = LLMPointwiseReranker(lm, mode=mode)
    ranked = reranker.rerank("airflow", DOCS)
    assert _is_permutation(ranked, len(DOCS))
    if mode == "erank":
        assert all(0.0 <= s <= 10.0 for _, s in ranked)
        assert reranker.stats.forward_passes == 2 * len(DOCS)  # "10" is two tokens here: a second pass


def test_erank_expected_value_by_hand(lm, monkeypatch):
    """p("7") = 1 gives 7; p("1") = 1 with p("0" | "1") = 0.5 gives 0.5 * 10 + 0.5 * 1."""
    reranker = LLMPointwiseReranker(lm, mode="erank", levels=10)
    digits = reranker._digits

    def fake(prompts, token_ids=None, progress=False):
        if token_ids is not None:  # first pass: over the digit tokens
            out = np.full((len(prompts), 10), -1e9, dtype=np.float32)
            for i, p in enumerate(prompts):
                out[i, 7 if "seven" in p else 1] = 0.0
            return out
        vocab = len(lm.tokenizer)
        out = np.full((len(prompts), vocab), -1e9, dtype=np.float32)
        out[:, digits[0]] = 0.0
        out[:, lm.tokenizer.eos_token_id] = 0.0  # "0" and end equally likely after "1"
        return out

    monkeypatch.setattr(lm, "next_token_logits", fake)
    scores = reranker.score([("q", ["seven", "one or ten"])])[0]
    assert scores == pytest.approx([7.0, 5.5])


def test_yesno_reads_yes_minus_no(lm, monkeypatch):
    reranker = LLMPointwiseReranker(lm, mode="yesno")
    n_yes, n_no = len(reranker._yes), len(reranker._no)

    def fake(prompts, token_ids=None, progress=False):
        out = np.zeros((len(prompts), n_yes + n_no), dtype=np.float32)
        for i, p in enumerate(prompts):
            out[i, 0] = 3.0 if "needle" in p else -3.0
        return out

    monkeypatch.setattr(lm, "next_token_logits", fake)
    ranked = reranker.rerank("q", ["hay", "hay", "the needle", "hay"])
    assert ranked[0][0] == 2


def test_rerank_run_batches_keeps_tail_and_checks_ids(tmp_path, synthetic_beir):
    calls = []

    class ByLength(Reranker):
        name = "by-length"

        def score(self, lists, progress=False):
            calls.append(len(lists))
            return [[float(len(d)) for d in docs] for _, docs in lists]

    corpus = Corpus(synthetic_beir)
    run = Run({"q0": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)], "q1": [("d4", 1.0)], "q2": []})
    queries = {"q0": "a", "q1": "b", "q2": "c"}
    out = ByLength().rerank_run(run, queries, corpus, depth=2)
    assert calls == [2]  # every query's list in one call
    texts = corpus.lookup(["d1", "d2"])
    head = sorted(["d1", "d2"], key=lambda d: -len(texts[d].full_text))
    assert [d for d, _ in out["q0"]] == head + ["d3"]
    assert out["q2"] == []
    with pytest.raises(InputError, match="not in the queries"):
        ByLength().rerank_run(run, {"q0": "a"}, corpus)
    with pytest.raises(InputError, match="not in the corpus"):
        ByLength().rerank_run(Run({"q0": [("nope", 1.0)]}), queries, corpus)


def test_specs(tiny_cross_encoder):
    assert parse_spec("listwise:m,window=20,stride=10").options == {"window": 20, "stride": 10}
    for bad in ("m", "foo:m", "listwise:", "groupwise:m,size=3"):
        with pytest.raises(InputError):
            parse_spec(bad)
    reranker = load_reranker(f"cross-encoder:{tiny_cross_encoder},batch_size=4")
    assert isinstance(reranker, CrossEncoderReranker) and reranker.batch_size == 4


def test_rerank_command(tmp_path, capsys, synthetic_beir, tiny_cross_encoder):
    from rankwise.cli import main

    Run({"q0": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}).write(tmp_path / "run.trec")
    args = ["rerank", str(tmp_path / "run.trec"), "--queries", str(synthetic_beir), "--corpus", str(synthetic_beir),
            "--reranker", f"cross-encoder:{tiny_cross_encoder}", "--depth", "2", "--out", str(tmp_path / "out.trec")]
    main(args)
    out = Run.read(tmp_path / "out.trec")
    assert sorted(d for d, _ in out["q0"][:2]) == ["d1", "d2"] and out["q0"][2][0] == "d3"
    Run({"q0": [("missing-doc", 1.0)]}).write(tmp_path / "bad.trec")
    with pytest.raises(SystemExit) as exit_info:
        main(args[:1] + [str(tmp_path / "bad.trec")] + args[2:])
    assert exit_info.value.code == 2
    assert "not in the corpus (first: 'missing-doc')" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(args[:7] + ["pairwise:x"] + args[8:])
    assert exit_info.value.code == 2


def test_first_stage_weight_interpolates_normalized_scores():
    class Fixed(Reranker):
        name = "fixed"

        def score(self, lists, progress=False):
            return [[{"A": 0.0, "B": 10.0, "C": 4.0}[d] for d in docs] for _, docs in lists]

    docs = {"a": "A", "b": "B", "c": "C", "z": "Z"}
    run = Run({"q": [("a", 9.0), ("c", 8.0), ("b", 5.0), ("z", 1.0)]})  # first stage: a 1, c 0.75, b 0
    alone = Fixed().rerank_run(run, {"q": "q"}, docs, depth=3, progress=False)
    assert [d for d, _ in alone["q"]] == ["b", "c", "a", "z"]  # reranker: b 1, c 0.4, a 0
    mixed = Fixed().rerank_run(run, {"q": "q"}, docs, depth=3, progress=False, first_stage_weight=0.7)
    # 0.7 * first + 0.3 * reranker: a 0.70, c 0.645, b 0.30; z stays below the reranked depth
    assert [d for d, _ in mixed["q"]] == ["a", "c", "b", "z"]
    assert dict(mixed["q"])["c"] == pytest.approx(0.7 * 0.75 + 0.3 * 0.4)
    with pytest.raises(InputError, match="first-stage weight"):
        Fixed().rerank_run(run, {"q": "q"}, docs, first_stage_weight=1.0)
