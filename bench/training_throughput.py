"""Training throughput: rankwise's trainer against a plain sentence-transformers trainer.

Same model, loss, data, batch size and number of steps; the two alternate for R rounds in one
run (order rotated each round) and the median samples/s of each and their ratio are reported
(target rankwise / plain >= 0.95). rankwise adds input checking, checkpoints/resume bookkeeping,
curriculum hooks and the atomic save on top of ``SentenceTransformerTrainer``; its ``train()``
time is what is compared (the data checking and the final save happen outside it in both).

    HF_HUB_OFFLINE=1 RANKWISE_MODELS=~/.cache/rankwise/models \\
        python bench/training_throughput.py --triples triples.tsv --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import CpuShare, command_line, log, machine, machine_line, median, write_json  # noqa: E402

PLAIN = "sentence-transformers SentenceTransformerTrainer"
RANKWISE = "rankwise train_bi_encoder"


def plain_run(model: str, triples: Path, loss: str, batch: int, steps: int, max_length: int, out: Path) -> float:
    """samples/s of a plain SentenceTransformerTrainer on the same text triples."""
    import datasets
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers

    from rankwise.retrieval.models import resolve_model

    rows = [line.rstrip("\n").split("\t") for line in triples.open(encoding="utf-8") if line.strip()]
    data = datasets.Dataset.from_dict({"query": [r[0] for r in rows], "positive": [r[1] for r in rows],
                                       "negative_1": [r[2] for r in rows]})
    st = SentenceTransformer(resolve_model(model), device="cpu")
    st.max_seq_length = max_length
    fn = (losses.MultipleNegativesRankingLoss(st, scale=20.0) if loss == "contrastive" else None)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5,
        warmup_steps=0.1, seed=0, data_seed=0, save_strategy="no", report_to="none", disable_tqdm=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES, use_cpu=True, dataloader_pin_memory=False, logging_steps=10)
    trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=data, loss=fn)
    t = time.perf_counter()
    trainer.train()
    return steps * batch / (time.perf_counter() - t)


def _settings(batch: int, steps: int, max_length: int, workers: int | None = None):
    from rankwise.training import TrainSettings

    # no checkpoint inside the timed steps: the plain trainer saves none either (save_strategy="no")
    return TrainSettings(max_steps=steps, batch_size=batch, lr=2e-5, max_length=max_length, save_steps=steps + 1,
                         logging_steps=10, workers=workers)


def rankwise_run(model: str, triples: Path, loss: str, batch: int, steps: int, max_length: int, out: Path) -> float:
    from rankwise.training import TrainingInput, train_bi_encoder

    result = train_bi_encoder(model, TrainingInput(triples), out, loss=loss, settings=_settings(batch, steps, max_length),
                              progress=False)
    return result.samples_per_second


def cross_encoder_run(model: str, triples: Path, loss: str, batch: int, steps: int, max_length: int, out: Path,
                      workers: int | None = None) -> float:
    """samples/s of rankwise's cross-encoder trainer (``train()`` time; one sample = a query's positive and negatives)."""
    from rankwise.training import TrainingInput, train_cross_encoder

    result = train_cross_encoder(model, TrainingInput(triples), out, loss=loss,
                                 settings=_settings(batch, steps, max_length, workers), progress=False)
    return result.samples_per_second


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--triples", type=Path, required=True, help="text triples TSV (query, positive, negative)")
    p.add_argument("--loss", default="contrastive", choices=["contrastive"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-out")
    args = p.parse_args()
    m = machine()
    print(f"command: {command_line()}")
    print(f"machine: {machine_line(m)}")
    runs = {PLAIN: plain_run, RANKWISE: rankwise_run}
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    others: list[float] = []
    names = list(runs)
    for r in range(args.rounds):
        order = names[r % 2:] + names[:r % 2]
        for name in order:
            with tempfile.TemporaryDirectory() as tmp, CpuShare() as share:
                sps = runs[name](args.model, args.triples, args.loss, args.batch_size, args.steps, args.max_length,
                                 Path(tmp) / "out")
            speeds[name].append(sps)
            others.append(share.others)
            log(f"round {r + 1}/{args.rounds} {name:<48} {sps:6.2f} samples/s (others {share.others:.0%})")
    base = median(speeds[PLAIN])
    print(f"{args.loss} on {args.triples.name}; batch {args.batch_size}; {args.steps} steps; max_length "
          f"{args.max_length}; {args.rounds} alternating rounds; other processes max {max(others):.0%} CPU")
    print("| trainer | samples/s (median) | ratio |\n|---|---:|---:|")
    for name in names:
        print(f"| {name} | {median(speeds[name]):.2f} | {median(speeds[name]) / base:.3f} |")
    ratio = median(speeds[RANKWISE]) / base
    print(f"rankwise / plain = {ratio:.3f} ({'meets' if ratio >= 0.95 else 'misses'} target >= 0.95)")
    write_json(args.json_out, {"command": command_line(), "machine": m, "speeds": speeds, "ratio": ratio,
                               "others_max": max(others)})


if __name__ == "__main__":
    main()
