"""Training the LLM rerankers on a tiny causal LM: FIRST and groupwise losses by hand, the training inputs
equal what the rerankers read at inference, every mode trains (LoRA and full) and the saved model reranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rankwise.retrieval.errors import InputError
from tests._helpers import settings, write_tuples
from rankwise.training.candidates import RunInput
from rankwise.training.data import TrainingInput
from rankwise.training.llm import LoRASettings
from rankwise.training.losses.first import first_loss, first_rank_loss
from rankwise.training.losses.listnet import listnet_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --- losses by hand ----------------------------------------------------------------------------

def test_first_rank_loss_by_hand():
    s = [0.5, 2.0, -1.0]
    # labels 1, 0, 2: gold order 2, 0, 1 -> ranks r0 = 2, r1 = 3, r2 = 1
    expected = (softplus(s[0] - s[2]) / (1 + 2) + softplus(s[1] - s[2]) / (1 + 3) + softplus(s[1] - s[0]) / (2 + 3))
    got = first_rank_loss(torch.tensor([s]), torch.tensor([[1.0, 0.0, 2.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # graded ties: only pairs whose labels differ; tied ranks follow the window order (r = 1, 2, 3)
    tied = first_rank_loss(torch.tensor([s]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert tied.item() == pytest.approx(softplus(s[1] - s[0]) / 3 + softplus(s[2] - s[0]) / 4, rel=1e-6)
    # a padded column changes nothing; the loss is a mean over windows
    padded = first_rank_loss(torch.tensor([s + [9.0], s + [0.0]]), torch.tensor([[1.0, 0, 2, 5], [1.0, 0, 2, 0]]),
                             torch.tensor([[True, True, True, False], [True, True, True, False]]))
    assert padded.item() == pytest.approx(expected, rel=1e-6)
    assert first_loss(torch.tensor(2.0), torch.tensor(0.5), 10.0).item() == pytest.approx(7.0)


def test_listnet_by_hand():
    scores, labels = [1.0, 0.0, 3.0], [1.0, 0.0, 0.0]
    p = np.exp(labels) / np.exp(labels).sum()
    log_q = np.array(scores) - math.log(np.exp(scores).sum())
    got = listnet_loss(torch.tensor([scores, scores]), torch.tensor([labels, labels]))
    assert got.item() == pytest.approx(-(p * log_q).sum(), rel=1e-6)


def test_torch_expected_score_equals_the_rerankers():
    from rankwise.rerank.scores import expected_score as reference
    from rankwise.training.groupwise import expected_score

    rng = np.random.default_rng(0)
    first = rng.normal(size=(4, 10))
    second = {1: np.exp(rng.normal(size=(4, 10)))}
    second[1] /= second[1].sum(1, keepdims=True) * 1.3  # some mass left for "stop after 1"
    for levels, whole in [(10, False), (4, False), (10, True)]:
        logits = rng.normal(size=(4, levels + 1)) if whole else first
        want = reference(logits, second, levels, whole)
        got = expected_score(torch.tensor(logits), {1: torch.tensor(second[1])}, levels, whole)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


# --- training inputs are the rerankers' own prompts and scores --------------------------------------

@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    from rankwise.rerank.llm import CausalLM

    return CausalLM(str(tiny_causal_lm), device="cpu")


ROW = {"query": "heart protein", "docs": ["heart protein study", "bone notes", "lung wave flow", "gene cell"],
       "labels": [1.0, 0.0, 2.0, 0.0]}


def test_first_window_is_the_listwise_prompt_and_its_gold_answer(lm):
    from rankwise.rerank.listwise import ListwiseReranker
    from rankwise.rerank.permutation import read_permutation
    from rankwise.training.listwise import FIRSTObjective

    assert FIRSTObjective(lm, window=4).shown(ROW) == (ROW["docs"], ROW["labels"])  # retrieved order by default
    objective = FIRSTObjective(lm, window=4, seed=0, order="shuffled")
    prompt, answer, labels = objective.window(ROW)
    docs, shuffled_labels = objective.shown(ROW)
    assert labels == shuffled_labels and sorted(docs) == sorted(ROW["docs"]) and docs != ROW["docs"]
    reranker = ListwiseReranker(lm, window=4, stride=2)
    text = reranker.window_prompt(ROW["query"], docs)  # the inference prompt of this window
    assert prompt == lm.tokenizer.encode(text, add_special_tokens=False)
    assert answer[0] in reranker.label_ids and answer[-1] == lm.tokenizer.eos_token_id
    gold, repaired = read_permutation("[" + lm.tokenizer.decode(answer[:-1]), 4)
    assert not repaired and [labels[i] for i in gold] == [2.0, 1.0, 0.0, 0.0]
    assert gold[2] < gold[3]  # ties keep the window order
    # the first-position logits trained are those FIRST reads at inference
    with torch.no_grad():
        train_logits = lm.model(input_ids=torch.tensor([prompt])).logits[0, -1, reranker.label_ids].numpy()
    infer_logits = lm.next_token_logits([text], reranker.label_ids)[0]
    np.testing.assert_allclose(train_logits, infer_logits, atol=1e-4)


@pytest.mark.parametrize("levels", [10, 3])
def test_groupwise_training_scores_are_the_rerankers_scores(lm, levels):
    from rankwise.rerank.groupwise import GroupwiseReranker
    from rankwise.training.groupwise import GroupwiseObjective

    objective = GroupwiseObjective(lm, group_size=4, levels=levels)
    reranker = GroupwiseReranker(lm, group_size=4, rounds=1, levels=levels)
    want = reranker.score([(ROW["query"], ROW["docs"])])[0]
    slots = reranker.plan(4, key=ROW["query"])[0][0]
    with torch.no_grad():
        got = objective.scores(lm.model, ROW["query"], [ROW["docs"][i] for i in slots]).numpy()
    np.testing.assert_allclose([got[slots.index(i)] for i in range(4)], want, rtol=1e-4, atol=1e-5)
    groups = objective.groups(ROW)
    assert all(len(docs) == 4 and len(set(labels)) > 1 for docs, labels in groups)


# --- training modes ----------------------------------------------------------------------------

def bm25_like_run(beir: Path, path: Path) -> Path:
    """A run of the synthetic BEIR queries: each judged document at rank 3 among 5 others."""
    lines = []
    for i in range(10):
        docs = [f"d{(i * 37 + j) % 400}" for j in (5, 11, 0, 23, 29)]
        lines += [f"q{i} Q0 {d} {r + 1} {10 - r} test" for r, d in enumerate(docs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def llm_settings(**kw):
    return settings(batch_size=2, **kw)


def _rerank_through_rerank(spec: str, beir: Path) -> None:
    from rankwise.rerank.spec import load_reranker
    from rankwise.retrieval.formats import Corpus, read_queries

    reranker = load_reranker(spec)
    run = bm25_like_run(beir, beir / "run.trec")
    from rankwise.retrieval.run import Run

    queries = read_queries(beir / "queries.jsonl")
    reranked = reranker.rerank_run(Run.read(run).top(5), queries, Corpus(beir), depth=5, progress=False)
    assert len(reranked) == 10 and all(len(reranked[q]) == 5 for q in reranked)


def test_listwise_first_lora_trains_and_reranks(tmp_path, tiny_causal_lm, synthetic_beir):
    from rankwise.training.listwise import train_listwise

    tuples, _ = write_tuples(tmp_path, n=8, negatives=3)
    result = train_listwise(str(tiny_causal_lm), TrainingInput(tuples), tmp_path / "lw", window=4,
                            settings=llm_settings(), lora=LoRASettings(r=4), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    log = [json.loads(x) for x in (tmp_path / "lw" / "training_log.jsonl").read_text().splitlines()]
    assert any("lm_loss" in e and "rank_loss" in e for e in log)
    assert (tmp_path / "lw" / "model.safetensors").is_file() and not (tmp_path / "lw" / "adapter_config.json").exists()
    _rerank_through_rerank(f"listwise:{tmp_path / 'lw'},window=4,stride=2", synthetic_beir)


@pytest.mark.slow  # full fine-tuning of the LM, then a resumed run: about a minute on 2 cores
def test_groupwise_full_fine_tuning_from_a_run_and_resume(tmp_path, tiny_causal_lm, synthetic_beir):
    from safetensors.numpy import load_file

    from rankwise.training.groupwise import train_groupwise

    source = RunInput(bm25_like_run(synthetic_beir, tmp_path / "train.trec"), synthetic_beir / "qrels" / "test.tsv",
                      synthetic_beir / "queries.jsonl", synthetic_beir, depth=5)
    s = llm_settings(max_steps=4)
    result = train_groupwise(str(tiny_causal_lm), source, tmp_path / "gw", loss="listnet", group_size=3, levels=3,
                             settings=s, lora=LoRASettings(enabled=False), progress=False)
    assert result.steps == 4 and np.isfinite(result.final_loss)
    before, after = load_file(str(tiny_causal_lm / "model.safetensors")), load_file(str(tmp_path / "gw" / "model.safetensors"))
    assert any(not np.allclose(before[k], after[k]) for k in before)  # full fine-tuning moved the base weights
    _rerank_through_rerank(f"groupwise:{tmp_path / 'gw'},group_size=3,levels=3", synthetic_beir)
    # an interrupted run resumes from its checkpoint and ends with the same weights
    from transformers import TrainerCallback

    class Stop(Exception):
        pass

    class StopAt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Stop

    with pytest.raises(Stop):
        train_groupwise(str(tiny_causal_lm), source, tmp_path / "gw2", loss="listnet", group_size=3, levels=3,
                        settings=s, lora=LoRASettings(enabled=False), progress=False, callbacks=[StopAt()])
    resumed = train_groupwise(str(tiny_causal_lm), source, tmp_path / "gw2", loss="listnet", group_size=3, levels=3,
                              settings=s, lora=LoRASettings(enabled=False), progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    again = load_file(str(tmp_path / "gw2" / "model.safetensors"))
    for k in after:
        np.testing.assert_allclose(after[k], again[k], atol=1e-5, err_msg=k)
    with pytest.raises(InputError, match="other settings"):
        train_groupwise(str(tiny_causal_lm), source, tmp_path / "gw2", loss="pg-rank", group_size=3, levels=3,
                        settings=s, progress=False)


def reranked_passes(out: Path) -> int:
    """The reranker's forward passes recorded in ``rankwise beir --out``'s results.json."""
    document = json.loads((out / "results.json").read_text())
    return sum(system["stats"]["rerank"]["forward_passes"] for experiment in document["experiments"]
               for system in experiment["systems"].values() if "rerank" in system.get("stats", {}))


def test_cli_groupwise_pg_rank_lora_and_beir_reranker(tmp_path, tiny_causal_lm, tiny_encoder, synthetic_beir, capsys):
    from rankwise.cli import main

    tuples, _ = write_tuples(tmp_path, n=8, negatives=3)
    main(["train", "groupwise", "--model", str(tiny_causal_lm), "--triples", str(tuples), "--out", str(tmp_path / "gw"),
          "--loss", "pg-rank", "--pg-samples", "4", "--pg-reward", "ndcg@3", "--group-size", "4", "--levels", "5",
          "--lora-r", "4", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    log = [json.loads(x) for x in (tmp_path / "gw" / "training_log.jsonl").read_text().splitlines()]
    assert any("pg_variance" in e for e in log)
    recorded = json.loads((tmp_path / "gw" / "rankwise_training.json").read_text())
    assert recorded["lora"]["r"] == 4 and recorded["pg_rank"]["reward"] == "ndcg@3"
    main(["beir", str(synthetic_beir), "--retriever", "dense", "--encoder", str(tiny_encoder), "-k", "10",
          "--reranker", f"groupwise:{tmp_path / 'gw'},group_size=4,levels=5", "--depth", "4", "--out", str(tmp_path / "eval"), "--json"])
    assert "nDCG@10" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["synthetic"]
    assert reranked_passes(tmp_path / "eval") > 0


def test_cli_listwise_full_from_runs_and_beir_reranker(tmp_path, tiny_causal_lm, tiny_encoder, synthetic_beir, capsys):
    from rankwise.cli import main

    run = bm25_like_run(synthetic_beir, tmp_path / "train.trec")
    main(["train", "listwise", "--model", str(tiny_causal_lm), "--runs", str(run), "--corpus", str(synthetic_beir),
          "--qrels", str(synthetic_beir / "qrels" / "test.tsv"), "--candidates", "5", "--window", "5", "--no-lora",
          "--rank-weight", "2", "--out", str(tmp_path / "lw"), "--max-steps", "2", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    main(["beir", str(synthetic_beir), "--retriever", "dense", "--encoder", str(tiny_encoder), "-k", "10",
          "--reranker", f"listwise:{tmp_path / 'lw'},window=5,stride=2", "--depth", "5", "--out", str(tmp_path / "eval"), "--json"])
    assert "nDCG@10" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["synthetic"]
    assert reranked_passes(tmp_path / "eval") > 0


def test_bad_llm_training_input_exits_2(tmp_path, tiny_causal_lm, synthetic_beir, capsys):
    from rankwise.cli import main

    tuples, _ = write_tuples(tmp_path, n=4, negatives=2)
    for args, needle in [
        (["--triples", str(tuples), "--runs", str(tuples)], "either --triples or --runs"),
        (["--runs", str(tmp_path / "missing.trec"), "--corpus", str(synthetic_beir),
          "--qrels", str(synthetic_beir / "qrels" / "test.tsv")], "missing.trec"),
        (["--triples", str(tuples), "--loss", "ranknet"], "loss"),
    ]:
        with pytest.raises(SystemExit) as done:
            main(["train", "listwise", "--model", str(tiny_causal_lm), "--out", str(tmp_path / "o"), *args])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    flat = tmp_path / "flat.tsv"  # every list has one label only: nothing to learn
    flat.write_text("q\tp\tn\n", encoding="utf-8")
    scores = tmp_path / "flat-scores.tsv"
    scores.write_text("1.0\t1.0\tq\tp\tn\n", encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main(["train", "groupwise", "--model", str(tiny_causal_lm), "--triples", str(flat), "--teacher-scores",
              str(scores), "--out", str(tmp_path / "g")])
    assert done.value.code == 2 and "no training list" in capsys.readouterr().err
