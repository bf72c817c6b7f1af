"""DataLoader workers on the trainers' data path: the default, the arguments, and the same training with 2
workers as in the main process (loss curve and final weights), for cross-encoders, bi-encoders and FIRST."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from transformers import TrainerCallback

from rankwise.retrieval.batching import default_workers
from tests._helpers import settings, weights, write_tuples
from rankwise.training.data import TrainingInput
from rankwise.training.settings import TrainSettings


def test_default_workers_leave_a_core_for_the_step(monkeypatch):
    assert [default_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [0, 0, 2, 3, 4, 4]
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes share the 16 cores
    assert default_workers() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 0


def test_workers_set_the_dataloader_arguments_and_not_the_run_identity(tmp_path):
    from transformers import TrainingArguments

    from rankwise.training.runner import training_arguments

    two = training_arguments(TrainingArguments, TrainSettings(workers=2), tmp_path)
    assert (two.dataloader_num_workers, two.dataloader_persistent_workers, two.dataloader_prefetch_factor) == (2, True, 2)
    none = training_arguments(TrainingArguments, TrainSettings(workers=0), tmp_path)
    assert (none.dataloader_num_workers, none.dataloader_persistent_workers, none.dataloader_prefetch_factor) == (0, False, None)
    assert TrainSettings(workers=0).identity() == TrainSettings(workers=2).identity()  # a run may resume with others
    with pytest.raises(Exception, match="workers"):
        TrainSettings(workers=-1)


class SeesTheLoader(TrainerCallback):
    """Records the train DataLoader's workers and checks its collate function and dataset pickle (spawned workers)."""

    def __init__(self) -> None:
        self.workers: int | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.workers = train_dataloader.num_workers
        pickle.dumps(train_dataloader.collate_fn)
        pickle.dumps(train_dataloader.dataset)


def _losses(out) -> list[float]:
    import json

    return [e["loss"] for e in map(json.loads, (out / "training_log.jsonl").read_text().splitlines()) if "loss" in e]


def _same_run(train, tmp_path) -> None:
    """``train(out, settings, callbacks)`` with 0 and 2 workers: same losses, same weights."""
    seen = {}
    for workers in (0, 2):
        seen[workers] = SeesTheLoader()
        train(tmp_path / f"w{workers}", settings(max_steps=4, workers=workers), [seen[workers]])
        assert seen[workers].workers == workers
    np.testing.assert_allclose(_losses(tmp_path / "w2"), _losses(tmp_path / "w0"), rtol=1e-6)
    a, b = weights(tmp_path / "w0"), weights(tmp_path / "w2")
    assert a.keys() == b.keys() and a
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)


def in_a_fresh_process(target, *args) -> None:
    """``target(*args)`` in a spawned interpreter, failing the test if it fails there. The DataLoader workers
    are forked from the training process: here a process that holds only what training loads, as under
    ``rankwise train``, not the test session (which has loaded OpenVINO, ONNX Runtime and served-model
    clients by then, and whose fork crashed it on CI)."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join(900)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, f"the training child failed (exit {child.exitcode}); its traceback is above"


def _encoder_same_run(kind: str, loss: str, tmp_path, tiny_encoder) -> None:
    """``train_cross_encoder`` (kind ``cross_encoder``) or ``train_bi_encoder`` (``bi_encoder``) with 0 and 2 workers."""
    import importlib

    train = getattr(importlib.import_module(f"rankwise.training.{kind}"), f"train_{kind}")
    tuples, _ = write_tuples(tmp_path)
    _same_run(lambda out, s, cb: train(str(tiny_encoder), TrainingInput(tuples), out, loss=loss, settings=s,
                                       progress=False, callbacks=cb), tmp_path)


def _first_same_run(tmp_path, tiny_causal_lm) -> None:
    from rankwise.rerank.llm import CausalLM
    from rankwise.training.listwise import FIRSTObjective, train_listwise
    from rankwise.training.llm import LoRASettings, PreparedRows

    row = {"query": "heart protein", "docs": ["heart study", "bone notes", "lung flow"], "labels": [1.0, 0.0, 2.0]}
    objective = FIRSTObjective(CausalLM(str(tiny_causal_lm), device="cpu"), window=3, order="shuffled")
    batch = PreparedRows(objective)([row])
    assert batch["rows"] == [row] and batch["prepared"] == [objective.window(row)]  # token ids, made in the collate
    unpickled = pickle.loads(pickle.dumps(PreparedRows(objective)))  # as a spawned worker gets it: no model
    assert unpickled([row]) == batch and getattr(unpickled.objective.reranker.lm, "model", None) is None
    tuples, _ = write_tuples(tmp_path, n=8, negatives=3)
    _same_run(lambda out, s, cb: train_listwise(str(tiny_causal_lm), TrainingInput(tuples), out, window=4,
                                                settings=TrainSettings(**{**s.to_dict(), "batch_size": 2}),
                                                lora=LoRASettings(r=4), progress=False, callbacks=cb), tmp_path)


def _cli_workers(tmp_path, tiny_encoder) -> None:
    import json

    from transformers import Trainer

    from rankwise.cli import main

    tuples, _ = write_tuples(tmp_path)
    seen = SeesTheLoader()
    init = Trainer.__init__

    def spy(self, *args, **kwargs):  # the CLI builds its own trainer: watch its DataLoader through a callback
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), seen]
        init(self, *args, **kwargs)

    Trainer.__init__ = spy
    main(["train", "cross-encoder", "--model", str(tiny_encoder), "--triples", str(tuples), "--out",
          str(tmp_path / "ce"), "--max-steps", "1", "--batch-size", "4", "--workers", "2"])
    assert seen.workers == 2
    assert json.loads((tmp_path / "ce" / "rankwise_training.json").read_text())["settings"]["workers"] == 2


@pytest.mark.slow  # a spawned child, which starts 2 DataLoader worker processes
def test_cross_encoder_trains_the_same_with_workers(tmp_path, tiny_encoder):
    in_a_fresh_process(_encoder_same_run, "cross_encoder", "lce", tmp_path, tiny_encoder)


@pytest.mark.slow  # a spawned child, which starts 2 DataLoader worker processes
def test_bi_encoder_trains_the_same_with_workers(tmp_path, tiny_encoder):
    in_a_fresh_process(_encoder_same_run, "bi_encoder", "contrastive", tmp_path, tiny_encoder)


@pytest.mark.slow  # a spawned child, which starts 2 DataLoader worker processes
def test_first_tokenizes_in_the_workers_and_trains_the_same(tmp_path, tiny_causal_lm):
    in_a_fresh_process(_first_same_run, tmp_path, tiny_causal_lm)


@pytest.mark.slow  # a spawned child, which starts 2 DataLoader worker processes
def test_cli_workers_option_reaches_the_trainer(tmp_path, tiny_encoder):
    in_a_fresh_process(_cli_workers, tmp_path, tiny_encoder)
