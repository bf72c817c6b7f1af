"""Long jobs on N processes and M machines under ``torchrun``: unit ``u`` of a job goes to rank ``u % W``.

    torchrun --nproc_per_node 4 -m rankwise index corpus.jsonl --out idx            # 4 GPUs, one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --master_addr HOST -m rankwise index ...  # 2 machines
    torchrun --nproc_per_node 4 -m rankwise rerank run.trec --queries Q --corpus C --reranker SPEC --out out.trec
    torchrun --nproc_per_node 4 -m rankwise mine ... --teacher SPEC --out triples.tsv
    torchrun --nproc_per_node 4 -m rankwise beir scifact --reranker SPEC --out res   # rank 0 writes and prints

No home-made launcher: torchrun sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``. Every sharded job is
cut into numbered units (a chunk of documents when indexing, a chunk of queries when reranking or
mining); rank ``r`` of ``W`` computes the units :func:`shard_units` gives it, each unit's output is
written atomically and kept, all ranks meet at a barrier (gloo on CPU, NCCL on GPU), and rank 0
merges the units in order, so the output is what one process writes. A killed job resumes: started
again (with any number of processes), every finished unit is kept and only the others are computed.

- Indexing: each rank builds the shard ``RANK/WORLD_SIZE`` (the ``--shard`` logic of
  :func:`rankwise.retrieval.index.build_dense_index`, resumable per chunk) into
  ``OUT/.ranks/shard-RANK``, and rank 0 joins the shards with
  :func:`rankwise.retrieval.index.merge_shards` (:func:`distributed_build`).
- Query jobs (:class:`ShardedJob`): the units' parts live in one work folder that all ranks share,
  claimed with the identity of the job's inputs (:func:`rankwise.retrieval.workdir.claim_workdir`):
  parts made from other inputs are refused, or discarded with ``--force``, never mixed in.

- Reranking inside a pipeline (``rankwise beir --reranker`` / ``--systems``, an ``Experiment``): every
  rank runs the first stage, reranks the queries :func:`shard_units` gives it, and every rank gets the
  whole reranked run back (:func:`gather`), so the evaluation is the one-process evaluation; rank 0
  alone writes and prints.

With several machines, the output and work folders must be on a file system all of them see.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.workdir import shard_units

log = logging.getLogger(__name__)
T = TypeVar("T")

RANKS_DIR = ".ranks"


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def device_for_rank(local_rank: int, size: int) -> str | None:
    """``cuda:LOCAL_RANK`` for one of ``size`` > 1 processes on a machine with GPUs, else None (the
    model's own default: one process picks its device as it would outside torchrun)."""
    import torch

    if size > 1 and torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return None


@contextmanager
def process_group(cuda: bool = False) -> Iterator[tuple[int, int]]:
    """Join torchrun's process group (NCCL when ``cuda``, else gloo) for the block; yields ``(rank, size)``.

    Outside torchrun (one process) there is no group; a group started by someone else is left alone.
    """
    rank, size, _ = world()
    if size == 1:
        yield rank, size
        return
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield rank, size
    finally:
        if started:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def merge_on_rank_zero(merge: Callable[[], T]) -> T | None:
    """All ranks meet; rank 0 runs ``merge``; all meet again (the output exists when any rank returns).
    Returns ``merge()``'s value on rank 0, None on the others."""
    barrier()
    value = merge() if world()[0] == 0 else None
    barrier()
    return value


def distributed_build(corpus: Any, encoder: Any, out: str | Path, config: Any, *, chunk_size: int = 8192,
                      force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build this rank's shard, wait for all ranks, and (rank 0) merge into ``out``; returns the manifest."""
    from rankwise.retrieval.index import _identity, _same_build, build_dense_index, merge_shards
    from rankwise.retrieval.manifest import MANIFEST, read_manifest

    rank, size, _ = world()
    out = Path(out)
    if (out / MANIFEST).is_file() and not force:  # a finished build: reused, as one process reuses it
        existing = read_manifest(out, verify=False)
        if _same_build(existing, {**_identity(corpus, encoder, config, chunk_size), "shard": None}):
            return read_manifest(out)
    with process_group(cuda=encoder_device_is_cuda(encoder)):
        build_dense_index(corpus, encoder, out / RANKS_DIR / f"shard-{rank}", config, chunk_size=chunk_size,
                          shard=(rank, size), force=force, progress=progress and rank == 0)

        def merge() -> dict[str, Any]:
            manifest = merge_shards([out / RANKS_DIR / f"shard-{r}" for r in range(size)], out, progress=progress)
            shutil.rmtree(out / RANKS_DIR, ignore_errors=True)
            return manifest

        manifest = merge_on_rank_zero(merge)
        return manifest if manifest is not None else read_manifest(out)


class ShardedJob:
    """A resumable job of ``units`` numbered units whose parts are kept in the work folder ``work``.

    Use as a context manager: on entry the process joins torchrun's group (when there is one), rank 0
    claims ``work`` for ``settings`` (:func:`rankwise.retrieval.workdir.claim_workdir`; a refusal is
    raised on every rank), :attr:`done_before` lists the units ``finished(u)`` says are done (checked by
    rank 0 once, before any rank starts), and :attr:`todo` this rank's units still to compute. The caller computes them, writing each unit's parts atomically (the marker last), then
    calls :meth:`merge`. In one process it is the same job with one rank.
    """

    def __init__(self, work: str | Path, settings: dict[str, Any], units: int, *, finished: Callable[[int], bool],
                 what: str, force: bool = False, key: str | None = None, cuda: bool = False) -> None:
        self.work, self.settings, self.units = Path(work), settings, units
        self.finished, self.what, self.force, self.key, self.cuda = finished, what, force, key, cuda
        self.rank, self.size, self.local_rank = world()
        self.mine: list[int] = []  # this rank's units
        self.done_before: list[int] = []  # every unit found finished on entry (whichever rank made it)
        self.kept: list[int] = []
        self.todo: list[int] = []
        self._group: Any = None

    def __enter__(self) -> ShardedJob:
        from rankwise.retrieval.workdir import claim_workdir

        self._group = process_group(self.cuda)
        self._group.__enter__()
        try:
            refusal: InputError | None = None
            done: list[int] = []
            if self.rank == 0:
                try:
                    if claim_workdir(self.work, self.settings, key=self.key, force=self.force, what=self.what):
                        done = [u for u in range(self.units) if self.finished(u)]
                except InputError as err:
                    refusal = err
            message, self.done_before = _from_rank_zero((None if refusal is None else str(refusal), done))
            if refusal is not None:
                raise refusal
            if message is not None:  # the other ranks stop with rank 0's one line
                raise InputError(message)
            self.mine = shard_units(self.units, self.rank, self.size)
            before = set(self.done_before)
            self.kept = [u for u in self.mine if u in before]
            self.todo = [u for u in self.mine if u not in before]
            if self.kept:
                log.info("resuming %s: %d of this process's %d parts already done", self.work, len(self.kept),
                         len(self.mine))
        except BaseException:
            self._group.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._group.__exit__(*exc)

    def merge(self, merge: Callable[[], T]) -> T | None:
        """Wait for all ranks; rank 0 runs ``merge`` and removes the work folder. Logs what this rank did."""
        log.info("%s: %d parts computed in this run, %d kept from before (rank %d of %d)", self.work,
                 len(self.todo), len(self.kept), self.rank, self.size)

        def merge_and_clean() -> T:
            value = merge()
            shutil.rmtree(self.work, ignore_errors=True)
            return value

        return merge_on_rank_zero(merge_and_clean)


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (plain data), in rank order; ``[value]`` in one process. Under torchrun,
    joins the process group first if no one has (gloo: the values are small; left at exit)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return [value]
    if not dist.is_initialized():
        import atexit

        dist.init_process_group("gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    box: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(box, value)
    return box


def _from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` (plain data: strings, numbers, lists) on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def encoder_device_is_cuda(encoder: Any) -> bool:
    model = getattr(encoder, "model", None)
    return model is not None and getattr(model, "device", None) is not None and model.device.type == "cuda"
