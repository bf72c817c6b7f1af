"""Helpers the tests share (one copy each): the ``rankwise`` command in-process, training inputs and settings,
a table-driven cross-encoder, a corpus file, a free port, a run killed part-way (SIGKILL)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys: Any, *args: object, check: bool = False) -> tuple[int, str, str]:
    """``rankwise ARGS`` in this process: (exit status, stdout, stderr); ``check``: fail unless it exits 0."""
    from rankwise.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exit_info:
        code = exit_info.code or 0
    out, err = capsys.readouterr()
    if check:
        assert code == 0, err
    return code, out, err


def error_line(err: str) -> str:
    """The one ``rankwise: error:`` line of ``err`` (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("rankwise: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


TOPICS = "heart protein gene blood cell virus drug brain lung liver kidney bone".split()


def write_tuples(folder: Path, n: int = 24, negatives: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """Text n-tuples (``folder/tuples.tsv``) and an aligned teacher-score file (``folder/scores.tsv``)."""
    rng = random.Random(seed)
    triples, scores = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        negs = [f"{rng.choice([w for w in TOPICS if w != topic])} notes number {i} {j}" for j in range(negatives)]
        triples.append("\t".join([f"what about {topic} {i}", f"{topic} is studied in paper {i}", *negs]))
        s = [round(rng.uniform(2, 5), 3)] + [round(rng.uniform(-3, 1), 3) for _ in negs]
        scores.append("\t".join([*map(str, s), f"q{i}", f"p{i}", *[f"n{i}-{j}" for j in range(negatives)]]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuples.tsv").write_text("\n".join(triples) + "\n", encoding="utf-8")
    (folder / "scores.tsv").write_text("\n".join(scores) + "\n", encoding="utf-8")
    return folder / "tuples.tsv", folder / "scores.tsv"


def settings(**kw: Any) -> Any:
    """Training settings for tiny runs: 3 steps of 4, lr 1e-3, a checkpoint every 2 steps (``kw`` overrides)."""
    from rankwise.training.settings import TrainSettings

    base = dict(max_steps=3, batch_size=4, lr=1e-3, save_steps=2, logging_steps=1, warmup_ratio=0.0)
    base.update(kw)
    return TrainSettings(**base)


def weights(path: Path) -> dict[str, Any]:
    """Every tensor of the final model under ``path`` (checkpoints left out), by file and name."""
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(path.rglob("model.safetensors")):
        if "checkpoint" not in str(f):
            out.update({f"{f.parent.relative_to(path)}/{k}": v for k, v in load_file(str(f)).items()})
    return out


def cross_encoder_logits(path: Path, query: str, docs: Sequence[str]) -> Any:
    """The saved cross-encoder's logits for (query, doc) straight from transformers (no rankwise code)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return model(**tokenizer([query] * len(docs), list(docs), padding=True, return_tensors="pt")).logits[:, 0].numpy()


def assert_reranks_with(path: Path, ranking: Sequence[tuple[int, float]], query: str, docs: Sequence[str]) -> None:
    """``ranking`` (a reranker's, best first) is the saved model's: its logits, sorted."""
    import numpy as np

    logits = cross_encoder_logits(path, query, docs)
    assert [i for i, _ in ranking] == [int(i) for i in np.argsort(-logits, kind="stable")]
    assert np.allclose([s for _, s in ranking], np.sort(logits)[::-1], atol=1e-4)


def FakeCrossEncoder(table: dict[tuple[str, str], float]) -> Any:  # noqa: N802
    """A CrossEncoder whose logit for (query, doc) is read from a table: the losses' math, not a model's."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from torch import nn

    class Fake(CrossEncoder):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self.pairs = list(table)
            self.logits = nn.Parameter(torch.tensor([table[p] for p in self.pairs]))

        @property
        def device(self):
            return torch.device("cpu")

        @property
        def num_labels(self):
            return 1

        def preprocess(self, pairs, prompt=None, task=None, **kwargs):
            return {"idx": torch.tensor([self.pairs.index(tuple(p)) for p in pairs])}

        def forward(self, features, **kwargs):
            return {"scores": self.logits[features["idx"]].unsqueeze(1)}

    return Fake()


class FakeChatLM:
    """The prompt side of a CausalLM as the listwise rerankers call it: the chat turns joined by lines, no
    truncation, one token id per label (its character code). Test doubles add the logits or the text."""

    def chat(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        return f"{system}\n{user}\n{assistant_prefix}"

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return text, False

    def single_token_ids(self, labels: Sequence[str]) -> list[int]:
        return [ord(x) for x in labels]


def write_corpus(path: Path, texts: Sequence[str]) -> Path:
    """A JSONL corpus of ``texts`` with ids ``d0``, ``d1``, ..."""
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), read from ``/proc`` (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, env: dict[str, str], timeout: float = 120) -> int | None:
    """Start ``cmd`` in a process group of its own, wait until ``ready()`` (or it exits), then SIGKILL it all.

    Everything dies at once, as on a node failure: the group and the groups of all its descendants
    (torchrun starts each rank in a session of its own, so killing torchrun's group alone would leave
    the ranks running). Returns the command's exit status if it ended before it was killed, else None.
    """
    proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    status = proc.poll()
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return status
