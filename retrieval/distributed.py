"""Multi-process indexing under ``torchrun``: each rank encodes chunks ``c % world == rank``, rank 0 merges.

    torchrun --nproc_per_node 4 -m rankwise index corpus.jsonl --out idx            # 4 GPUs, one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --master_addr HOST -m rankwise index ...  # 2 machines

No home-made launcher: torchrun sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; each rank builds the
shard ``RANK/WORLD_SIZE`` (the ``--shard`` logic of :func:`rankwise.retrieval.index.build_dense_index`, resumable
per chunk) into ``OUT/.ranks/shard-RANK``, all ranks meet at a barrier (gloo on CPU, NCCL on GPU), and
rank 0 joins the shards with :func:`rankwise.retrieval.index.merge_shards`, so the index is byte-identical to a
one-process build. A killed run resumes: started again, every rank keeps the chunks it had finished.
With several machines, ``OUT`` must be on a file system all of them see.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

RANKS_DIR = ".ranks"


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def device_for_rank(local_rank: int) -> str | None:
    """``cuda:LOCAL_RANK`` when this machine has GPUs, else None (the encoder's default: CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return None


def distributed_build(corpus: Any, encoder: Any, out: str | Path, config: Any, *, chunk_size: int = 8192,
                      force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Build this rank's shard, wait for all ranks, and (rank 0) merge into ``out``; returns the manifest."""
    import torch.distributed as dist

    from rankwise.retrieval.index import build_dense_index, merge_shards
    from rankwise.retrieval.manifest import read_manifest

    from rankwise.retrieval.index import _identity, _same_build
    from rankwise.retrieval.manifest import MANIFEST

    rank, size, _ = world()
    out = Path(out)
    if (out / MANIFEST).is_file() and not force:  # a finished build: reused, as one process reuses it
        existing = read_manifest(out, verify=False)
        if _same_build(existing, {**_identity(corpus, encoder, config, chunk_size), "shard": None}):
            return read_manifest(out)
    shard_dir = out / RANKS_DIR / f"shard-{rank}"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if encoder_device_is_cuda(encoder) else "gloo")
    try:
        build_dense_index(corpus, encoder, shard_dir, config, chunk_size=chunk_size, shard=(rank, size),
                          force=force, progress=progress and rank == 0)
        dist.barrier()
        if rank == 0:
            manifest = merge_shards([out / RANKS_DIR / f"shard-{r}" for r in range(size)], out, progress=progress)
            shutil.rmtree(out / RANKS_DIR, ignore_errors=True)
        dist.barrier()
        return manifest if rank == 0 else read_manifest(out)
    finally:
        if started:
            dist.destroy_process_group()


def encoder_device_is_cuda(encoder: Any) -> bool:
    model = getattr(encoder, "model", None)
    return model is not None and getattr(model, "device", None) is not None and model.device.type == "cuda"
