"""Memory-aware training: the pre-flight refusal (before any data is read), the token budget with gradient
accumulation, the estimate's parts, and the cost line of a training run."""

from __future__ import annotations

import logging

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.training.memory import (RUNTIME_BYTES, ModelShape, estimate_peak, model_shape, parse_bytes, plan_batches,
                                      preflight)
from tests._helpers import settings, write_tuples

MINILM = ModelShape(parameters=22_713_216, layers=6, hidden=384, intermediate=1536, heads=12, max_length=512)


def test_plan_batches_keeps_the_effective_batch():
    assert plan_batches(32, 5, 512, None) == (32, 1)
    for batch, texts, length, budget in [(32, 5, 512, 20_000), (32, 5, 128, 16_384), (8, 3, 100, 10**9), (6, 2, 64, 500)]:
        micro, accumulation = plan_batches(batch, texts, length, budget)
        assert micro * accumulation == batch
        assert micro * texts * length <= budget or micro == 1
    assert plan_batches(32, 5, 128, 16_384) == (16, 2)  # 25 samples would fit: the largest divisor of 32 below is 16
    with pytest.raises(InputError):
        plan_batches(8, 1, 16, 0)


def test_estimate_grows_with_batch_and_length_and_checkpointing_saves():
    small = estimate_peak(MINILM, sequences=20, max_length=128)
    assert small.runtime == RUNTIME_BYTES and small.state == 16 * MINILM.parameters
    assert estimate_peak(MINILM, sequences=40, max_length=128).activations == 2 * small.activations
    assert estimate_peak(MINILM, sequences=20, max_length=256).activations > 2 * small.activations  # attention: s^2
    big = estimate_peak(MINILM, sequences=160, max_length=512)
    assert big.total > 40 * 2**30  # the README's old defaults: far beyond a 16 GB laptop
    assert estimate_peak(MINILM, sequences=160, max_length=512, gradient_checkpointing=True).total < big.total / 2


def test_parse_bytes():
    assert parse_bytes("16G") == 16 * 2**30 and parse_bytes("512M") == 512 * 2**20 and parse_bytes("2.5GB") == int(2.5 * 2**30)
    with pytest.raises(InputError):
        parse_bytes("lots")


def test_preflight_refuses_with_settings_that_fit(monkeypatch):
    monkeypatch.setenv("RANKWISE_MEMORY_LIMIT", "16G")
    with pytest.raises(InputError) as err:
        preflight(MINILM, batch_size=32, texts=5, max_length=None, max_tokens=None, gradient_checkpointing=False)
    message = str(err.value)
    assert "RANKWISE_MEMORY_LIMIT" in message and "--max-length" in message and "--max-tokens" in message
    suggested = int(message.split("--max-length ")[1].split()[0].rstrip(","))
    preflight(MINILM, batch_size=32, texts=5, max_length=suggested, max_tokens=None, gradient_checkpointing=False)
    budget = int(message.split("--max-tokens ")[1].split()[0])
    _, micro, accumulation = preflight(MINILM, batch_size=32, texts=5, max_length=None, max_tokens=budget,
                                       gradient_checkpointing=False)
    assert micro * accumulation == 32


def test_model_shape_reads_the_config_without_loading(tiny_encoder):
    from transformers import AutoModel

    shape = model_shape(str(tiny_encoder), "cross-encoder")
    assert shape.parameters == sum(p.numel() for p in AutoModel.from_pretrained(str(tiny_encoder)).parameters())
    assert (shape.hidden, shape.layers, shape.max_length) == (32, 2, 128)


def test_cli_refuses_before_reading_data(tmp_path, tiny_encoder, capsys, monkeypatch):
    """A step that does not fit: exit 2, one line naming a --max-length that fits, no training data read."""
    from rankwise.cli import main
    from rankwise.training import data as data_module

    tuples, _ = write_tuples(tmp_path, n=8)
    reads = []
    real = data_module.read_training_samples
    monkeypatch.setattr(data_module, "read_training_samples", lambda *a, **k: reads.append(a) or real(*a, **k))
    monkeypatch.setenv("RANKWISE_MEMORY_LIMIT", "1.1G")
    args = ["train", "cross-encoder", "--model", str(tiny_encoder), "--triples", str(tuples), "--loss", "lce",
            "--negatives", "2", "--batch-size", "64", "--max-steps", "1", "--out", str(tmp_path / "ce")]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:") and "settings that fit" in lines[0], err
    assert reads == [] and not (tmp_path / "ce").exists()
    fits = lines[0].split("--max-length ")[1].split()[0].rstrip(",")
    main([*args, "--max-length", fits])  # the suggestion passes the check and trains
    assert reads and (tmp_path / "ce" / "rankwise_training.json").is_file()


class _Count:
    """Counts forward passes (micro-batches) and optimizer steps."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self
        self.passes = self.steps = 0
        self.args = None

        class Callback(TrainerCallback):
            def on_substep_end(self, args, state, control, **kwargs):
                outer.passes += 1

            def on_step_end(self, args, state, control, **kwargs):
                outer.passes += 1
                outer.steps += 1
                outer.args = args

        self.callback = Callback()


def test_token_budget_accumulates_to_the_same_effective_batch(tmp_path, tiny_encoder, caplog):
    from rankwise.training.cross_encoder import train_cross_encoder
    from rankwise.training.data import TrainingInput

    tuples, _ = write_tuples(tmp_path, n=24, negatives=2)
    data = TrainingInput(tuples)
    whole, split = _Count(), _Count()
    caplog.set_level(logging.INFO)
    a = train_cross_encoder(str(tiny_encoder), data, tmp_path / "whole", loss="lce", negatives=2, progress=False,
                            settings=settings(batch_size=4, max_length=32), callbacks=[whole.callback])
    # 3 pairs x 32 tokens per sample: a budget of 200 tokens fits 2 samples per pass, so 2 passes per step
    b = train_cross_encoder(str(tiny_encoder), data, tmp_path / "split", loss="lce", negatives=2, progress=False,
                            settings=settings(batch_size=4, max_length=32, max_tokens=200), callbacks=[split.callback])
    assert (whole.args.per_device_train_batch_size, whole.args.gradient_accumulation_steps) == (4, 1)
    assert (split.args.per_device_train_batch_size, split.args.gradient_accumulation_steps) == (2, 2)
    assert whole.steps == split.steps == 3 and whole.passes == 3 and split.passes == 6
    assert a.samples == b.samples == 12  # the same effective batch: 3 steps x 4 samples
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("memory: about") and "2 samples per pass x 2 passes per step" in m for m in messages)
    cost = [m for m in messages if m.startswith("cost: training cross-encoder (4 samples per step)")]
    assert len(cost) == 2 and all(": 3 steps at " in m and "(measured over 1 step): about " in m for m in cost)
    assert any(m.startswith("this model reranks with max_length=32") for m in messages)


def test_rerank_summary_shows_the_window(tmp_path, synthetic_beir, tiny_cross_encoder, capsys):
    from rankwise.cli import main

    run = tmp_path / "run.trec"
    run.write_text("".join(f"q{q} Q0 d{d} {r + 1} {10 - r} bm25\n" for q in range(3) for r, d in enumerate(range(5))),
                   encoding="utf-8")
    main(["rerank", str(run), "--queries", str(synthetic_beir), "--corpus", str(synthetic_beir), "--depth", "5",
          "--reranker", f"cross-encoder:{tiny_cross_encoder},max_length=16", "--out", str(tmp_path / "out.trec")])
    err = capsys.readouterr().err
    assert "15 passages," in err and "truncated at max_length=16 (override: max_length= in the spec)" in err
