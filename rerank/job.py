"""Rerank a TREC run file as a resumable job, in one process or sharded across torchrun's ranks.

The run's queries, in the run's order, are cut into chunks of ``chunk_size``; chunk ``n`` is reranked
by rank ``n % WORLD_SIZE`` (:mod:`rankwise.retrieval.distributed`) on that rank's own device
(``cuda:LOCAL_RANK`` when the machine has GPUs) and written atomically to ``<out>.work/part-NNNNN.trec``,
with its counts beside it; rank 0 joins the parts, in order, into ``out``. One process runs the same
chunks, so the file is byte-identical whatever the number of processes: each chunk is scored by one
call of the reranker (its batches formed the same way), and scores are written with a fixed format
(``%.9g``, exact for float32). The work folder carries the identity of the inputs (run, queries and
corpus contents, the model files' fingerprint, every option): a killed job rerun with the same
command keeps its finished chunks, one with other inputs is refused unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.rerank.base import check_run_queries
from rankwise.rerank.spec import RerankerSpec, load_reranker, parse_spec
from rankwise.retrieval.backend.value import Backend
from rankwise.retrieval.distributed import ShardedJob, device_for_rank
from rankwise.retrieval.files import sha256_file, tree_fingerprint, write_json
from rankwise.retrieval.formats import Corpus, read_queries
from rankwise.retrieval.models import resolve_model
from rankwise.retrieval.progress import CostBar
from rankwise.retrieval.run import Run
from rankwise.retrieval.workdir import concatenate, part_path

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
WORK_SUFFIX = ".work"
COUNTS = ("lists", "passages", "truncated", "forward_passes")


@dataclass
class RerankJobResult:
    """What a reranking job did (all ranks together): queries, counts summed over the chunks."""

    queries: int = 0
    chunks: int = 0
    computed_chunks: int = 0  # by this process in this run
    kept_chunks: int = 0  # this process's chunks found finished from an earlier run
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    reranker: Any = None  # this process's reranker (None when it had nothing left to compute)


def model_fingerprint(spec: RerankerSpec) -> str | None:
    """The fingerprint of the spec's model files (None for a hub name with no local copy)."""
    path = Path(resolve_model(spec.model))
    return tree_fingerprint(path) if path.exists() else None


def rerank_file(run_file: str | Path, queries: str | Path, corpus: str | Path, spec: str | RerankerSpec,
                out: str | Path, *, depth: int = 100, batch_size: int | None = None, backend: Backend | str | None = None,
                first_stage_weight: float = 0.0, save_reasoning: str | Path | None = None,
                chunk_size: int = 256, force: bool = False, progress: bool = True) -> RerankJobResult:
    """Rerank the top ``depth`` of every query of ``run_file`` with ``spec`` into the TREC file ``out``.

    Under ``torchrun`` each rank reranks its share of the chunks; see the module docstring.
    ``save_reasoning`` (listwise ``mode=reason``) writes each window's reasoning as JSONL.
    """
    from rankwise.retrieval.errors import InputError

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {chunk_size}", field="chunk-size")
    if save_reasoning is not None and (spec.paradigm, spec.options.get("mode")) != ("listwise", "reason"):
        raise InputError("--save-reasoning needs a listwise:MODEL,mode=reason reranker", field="save-reasoning")
    out = Path(out)
    run = Run.read(run_file)
    texts = read_queries(queries)
    check_run_queries(run, texts)
    docs = Corpus(corpus)
    qids = list(run)
    chunks = [qids[i:i + chunk_size] for i in range(0, len(qids), chunk_size)]
    settings = {
        "format_version": FORMAT_VERSION, "run": sha256_file(run_file),
        "queries": hashlib.sha256(json.dumps(texts, sort_keys=True).encode("utf-8")).hexdigest(),
        "corpus": docs.fingerprint, "reranker": str(spec), "model": model_fingerprint(spec), "depth": depth,
        "batch_size": batch_size, "backend": None if backend is None else str(backend), "first_stage_weight": first_stage_weight,
        "chunk_size": chunk_size, "reasoning": save_reasoning is not None,
    }
    work = out.with_name(out.name + WORK_SUFFIX)

    def finished(n: int) -> bool:
        return part_path(work, n, "trec").is_file() and part_path(work, n, "json").is_file() and (
            save_reasoning is None or part_path(work, n, "jsonl").is_file())

    result = RerankJobResult(queries=len(qids), chunks=len(chunks))
    with ShardedJob(work, settings, len(chunks), finished=finished, what="an unfinished reranking job",
                    force=force) as job:
        result.computed_chunks, result.kept_chunks = len(job.todo), len(job.kept)
        if job.todo:
            device = device_for_rank(job.local_rank, job.size)
            reranker = result.reranker = load_reranker(spec, batch_size=batch_size, backend=backend,
                                                       device=device)
            show = progress and job.rank == 0
            with CostBar(total=sum(len(chunks[n]) for n in job.mine), desc="reranking", unit="query", warmup=1,
                         disable=not show, file=sys.stderr) as bar:
                bar.update(sum(len(chunks[n]) for n in job.kept))
                for n in job.todo:
                    _rerank_chunk(reranker, run, chunks[n], texts, docs, work, n, depth=depth,
                                  first_stage_weight=first_stage_weight, tag=f"rankwise-{spec.paradigm}",
                                  reasoning=save_reasoning is not None)
                    bar.update(len(chunks[n]))

        def merge() -> dict[str, int]:
            concatenate([part_path(work, n, "trec") for n in range(len(chunks))], out)
            if save_reasoning is not None:
                concatenate([part_path(work, n, "jsonl") for n in range(len(chunks))], save_reasoning)
            totals = dict.fromkeys(COUNTS, 0)
            for n in range(len(chunks)):
                counts = json.loads(part_path(work, n, "json").read_text(encoding="utf-8"))
                for key in COUNTS:
                    totals[key] += int(counts.get(key, 0))
            return totals

        totals = job.merge(merge)
    if totals is not None:
        result.counts = totals
    return result


def _rerank_chunk(reranker: Any, run: Run, qids: list[str], texts: dict[str, str], docs: Corpus, work: Path,
                  n: int, *, depth: int, first_stage_weight: float, tag: str, reasoning: bool) -> None:
    """Rerank one chunk of queries and write its parts (the run last: it marks the chunk finished)."""
    reranker.stats.reset()
    if reasoning:
        reranker.records.clear()
    reranked = reranker.rerank_run(Run({q: run[q] for q in qids}), texts, docs, depth=depth, progress=False,
                                   first_stage_weight=first_stage_weight)
    if reasoning:
        from rankwise.rerank.reasoning import write_reasoning

        write_reasoning(part_path(work, n, "jsonl"), reranker.records, texts)
    s = reranker.stats
    write_json(part_path(work, n, "json"), {"lists": s.lists, "passages": s.passages, "truncated": s.truncated,
                                             "forward_passes": s.forward_passes})
    reranked.write(part_path(work, n, "trec"), tag=tag)
