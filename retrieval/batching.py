"""One data path for every model that reads text: tokenize once, batch by a token budget, prefetch.

- **Tokenize once.** :func:`tokenize` runs the fast tokenizer's batch call (parallel in Rust) over
  every text (or ``(query, document)`` pair) once, truncated as sentence-transformers truncates
  (``longest_first`` to ``max_length``). The ids give the lengths for the sort *and* the model's
  inputs: batches are padded from them (:meth:`Tokenized.pad`), never tokenized again.
- **Token budget.** :func:`token_batches` sorts by length (longest first) and closes a batch when
  one more text would make ``count x longest`` exceed ``max_tokens`` or the count reach
  ``batch_size``; short texts fill big batches, long ones stay small. A text longer than the budget
  gets a batch of its own.
- **Prefetch.** :func:`prefetch` prepares (pads, tensorises, pins) the next batches in a bounded
  background thread while the model runs the current one; on CUDA the host tensors are pinned and
  copied with ``non_blocking=True`` (:func:`to_device`).
- **Stream.** :func:`stream_batches` tokenizes in slices of ``slice_size`` texts, the next slice in a
  background thread while the model runs the batches of the current one, so tokenization and the
  model overlap instead of taking turns (the sort is per slice: a few thousand texts sort as well
  as a million for padding's sake).
- **Workers.** Trainers collate (tokenize and pad) in ``DataLoader`` worker processes
  (:func:`default_workers` of them unless told), so a step never waits on the tokenizer.

Tokenization calls the fast tokenizer's Rust ``encode_batch_fast`` directly when its ids equal those
of the tokenizer's own ``__call__`` (checked on each call's first texts), skipping ``transformers``'
per-text Python conversion of each encoding (attention masks, offsets) that the path never reads;
its encodings also say which texts were truncated (their ``overflowing`` part), so counting them
costs no second tokenization.

Padding changes nothing but the shape of a batch: with the attention mask, each text's vector is the
same (within float error) whatever its batch-mates (Vaswani et al., 2017, masked attention).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")
__all__ = ["Tokenized", "as_tensors", "count_truncated", "default_workers", "prefetch", "stream_batches", "to_device",
           "token_batches", "tokenize"]

SLICE_SIZE = 2048  # texts tokenized at a time by stream_batches
_CHECK = 4  # texts of each call tokenized both ways to check the fast path


@dataclass(frozen=True)
class BatchingConfig:
    """How a model forms its batches, given once at construction (:class:`rankwise.retrieval.encoder.Encoder`,
    :class:`rankwise.rerank.cross_encoder.CrossEncoderReranker`).

    ``max_tokens``: padded tokens per batch (None: ``batch_size`` items, :func:`token_batches`);
    ``prefetch_depth``: batches prepared ahead in a background thread (0: none, :func:`prefetch`);
    ``slice_size``: items tokenized at a time, the next slice while the model runs this one
    (:func:`stream_batches`; None: :data:`SLICE_SIZE` when the model runs off the CPU, else all at once -- on
    the CPU the model and the tokenizer share the cores, and overlapping them measured 15-25% slower on
    2 cores than tokenizing first).
    """

    max_tokens: int | None = None
    prefetch_depth: int = 2
    slice_size: int | None = None

    def __post_init__(self) -> None:
        from rankwise.retrieval.errors import InputError

        for name, value, least in (("max_tokens", self.max_tokens, 1), ("slice_size", self.slice_size, 1),
                                   ("prefetch_depth", self.prefetch_depth, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise InputError(f"must be an integer >= {least}, got {value!r}", field=name)

    def slices(self, accelerated: bool, count: int) -> int:
        """Items tokenized at a time for ``count`` items on a model that runs off the CPU (``accelerated``) or not."""
        return self.slice_size or (SLICE_SIZE if accelerated else count)


def default_workers(cores: int | None = None) -> int:
    """DataLoader workers when none are asked for: ``min(4, cores - 1)``, and 0 on two cores or fewer.

    One core stays with the training step; on a 2-core machine a worker would only take the step's
    core (the collation then runs in the main process). ``cores`` defaults to the CPUs this process
    may run on, shared among torchrun's processes on this machine (``LOCAL_WORLD_SIZE``).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return 0 if cores <= 2 else min(4, cores - 1)


@dataclass
class Tokenized:
    """Per-text token lists (``input_ids`` and, when the tokenizer gives them, ``token_type_ids``)."""

    ids: dict[str, list[list[int]]]
    lengths: np.ndarray
    pad_id: int = 0
    pad_type_id: int = 0
    left: bool = False
    max_length: int | None = None  # what the texts were truncated to
    truncated: int | None = None  # texts longer than max_length (None: not known from the tokenization)

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(self, idx: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """``[len(idx), longest]`` int64 features for texts ``idx``: ids, ``attention_mask``, type ids."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        pads = {"input_ids": self.pad_id, "token_type_ids": self.pad_type_id}
        out = {k: np.full((len(idx), width), pads.get(k, 0), dtype=np.int64) for k in self.ids}
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, (i, n) in enumerate(zip(idx.tolist(), lengths.tolist())):
            cols = slice(width - n, width) if self.left else slice(0, n)
            for key, lists in self.ids.items():
                out[key][row, cols] = lists[i]
            mask[row, cols] = 1
        out["attention_mask"] = mask
        return out


def tokenize(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None,
             max_length: int | None = None, add_special_tokens: bool = True) -> Tokenized:
    """Tokenize ``texts`` (or ``(texts, pairs)``) once, truncated ``longest_first`` to ``max_length``."""
    texts = list(texts)
    if not texts:
        return Tokenized({"input_ids": []}, np.zeros(0, dtype=np.int64))
    pairs = list(pairs) if pairs is not None else None
    fast = _fast_ids(tokenizer, texts, pairs, max_length, add_special_tokens)
    ids, truncated = fast if fast is not None else (_call_ids(tokenizer, texts, pairs, max_length,
                                                              add_special_tokens), None)
    lengths = np.fromiter((len(x) for x in ids["input_ids"]), dtype=np.int64, count=len(texts))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Tokenized(ids, lengths, int(pad_id), int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
                     getattr(tokenizer, "padding_side", "right") == "left", max_length,
                     truncated if max_length else 0)


def _call_ids(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int | None,
              add_special_tokens: bool = True) -> dict[str, list]:
    """Token lists from the tokenizer's own ``__call__`` (any tokenizer)."""
    encoded = tokenizer(texts, pairs, padding=False, truncation="longest_first" if max_length else False,
                        max_length=max_length or None, return_attention_mask=False,
                        add_special_tokens=add_special_tokens)
    return {k: list(v) for k, v in encoded.items() if k != "attention_mask"}


def _fast_ids(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int | None,
              add_special_tokens: bool = True) -> tuple[dict[str, list], int] | None:
    """``(token lists, how many texts were truncated)`` from the Rust tokenizer's ``encode_batch_fast``, or
    None when the tokenizer has none or its ids differ from :func:`_call_ids` on the first texts (a
    tokenizer whose ``__call__`` does more)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    truncation, padding = backend.truncation, backend.padding
    try:
        if max_length:
            backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                                      direction=getattr(tokenizer, "truncation_side", "right"))
        else:
            backend.no_truncation()
        backend.no_padding()
        inputs: list[Any] = list(zip(texts, pairs)) if pairs is not None else texts
        encodings = backend.encode_batch_fast(inputs, add_special_tokens=add_special_tokens)
    except Exception:  # noqa: BLE001 - a tokenizer the fast path cannot drive: its __call__ can
        return None
    finally:
        backend.enable_truncation(**truncation) if truncation else backend.no_truncation()
        backend.enable_padding(**padding) if padding else backend.no_padding()
    ids = {"input_ids": [e.ids for e in encodings]}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        ids["token_type_ids"] = [e.type_ids for e in encodings]
    n = min(_CHECK, len(texts))
    check = _call_ids(tokenizer, texts[:n], pairs[:n] if pairs is not None else None, max_length, add_special_tokens)
    if set(check) != set(ids) or any(check[k] != ids[k][:n] for k in check):
        return None
    return ids, sum(1 for e in encodings if e.overflowing)  # a truncated text keeps its cut tail there


def count_truncated(tokenizer: Any, tok: Tokenized, texts: Sequence[str], pairs: Sequence[str] | None = None,
                    max_length: int | None = None) -> int:
    """How many of the tokenized ``texts`` (or pairs) were longer than ``max_length`` tokens, exactly.

    The tokenization's own count when it has one (the Rust path); otherwise only the texts at the cap
    (``length >= max_length``: truncated, or exactly that long) are tokenized again, without
    truncation, so the count costs one tokenizer call over those alone.
    """
    if not max_length or not len(tok):
        return 0
    if tok.truncated is not None and tok.max_length == max_length:
        return tok.truncated
    at_cap = np.flatnonzero(tok.lengths >= max_length)
    if not len(at_cap):
        return 0
    full = tokenizer([texts[i] for i in at_cap], [pairs[i] for i in at_cap] if pairs is not None else None,
                     truncation=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return sum(1 for x in full if len(x) > max_length)


def token_batches(lengths: Sequence[int] | np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Index batches, longest texts first: at most ``batch_size`` texts and ``max_tokens`` padded tokens each.

    Every index appears exactly once. A text longer than ``max_tokens`` is a batch of one.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = np.argsort(-lengths, kind="stable")
    if max_tokens is None:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    batches, start, n = [], 0, len(order)
    while start < n:
        width = max(int(lengths[order[start]]), 1)  # the batch's longest: its first text
        count = min(batch_size, max(1, max_tokens // width), n - start)
        batches.append(order[start:start + count])
        start += count
    return batches


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], prepare: Callable[[T], R], depth: int = 2) -> Iterator[R]:
    """``prepare(item)`` for each item, computed up to ``depth`` items ahead in a background thread.

    Results come in order; an exception in ``prepare`` is raised here; closing the generator early
    stops the thread. ``depth=0`` prepares in the caller's thread (the plain path).
    """
    if depth <= 0:
        for item in items:
            yield prepare(item)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                result = prepare(item)
                while not stop.is_set():
                    try:
                        q.put(result, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # handed to the consumer
            q.put(_Failure(err))

    thread = threading.Thread(target=produce, name="rankwise-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            result = q.get()
            if result is done:
                return
            if isinstance(result, _Failure):
                raise result.error
            yield result
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def stream_batches(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                   max_length: int | None, batch_size: int, max_tokens: int | None = None,
                   prepare: Callable[[Tokenized, np.ndarray], Any] = lambda tok, idx: tok.pad(idx), depth: int = 2,
                   slice_size: int = SLICE_SIZE,
                   on_slice: Callable[[Tokenized, int], None] | None = None) -> Iterator[tuple[np.ndarray, Any]]:
    """``(indices into texts, prepare(slice, indices into the slice))`` for every batch of every slice of
    ``slice_size`` texts (``prepare`` pads by default: :meth:`Tokenized.pad`).

    Each slice is tokenized once (:func:`tokenize`) and cut into :func:`token_batches`; with
    ``depth > 0`` the next slice is tokenized in one background thread and the next ``depth``
    batches padded and prepared in another while the caller runs the model, so the three overlap.
    ``on_slice(tokenized, start)`` sees each slice (for counts such as truncation) before its batches.
    Every text is in exactly one batch; ``depth=0`` does it all in the caller's thread.
    """
    texts = list(texts)
    pairs = list(pairs) if pairs is not None else None
    slice_size = max(1, slice_size)

    def tokenize_slice(start: int) -> tuple[int, Tokenized]:
        end = start + slice_size
        return start, tokenize(tokenizer, texts[start:end], pairs[start:end] if pairs is not None else None,
                               max_length=max_length)

    def batches() -> Iterator[tuple[int, Tokenized, np.ndarray]]:
        for start, tok in prefetch(range(0, len(texts), slice_size), tokenize_slice, min(depth, 1)):
            if on_slice is not None:
                on_slice(tok, start)
            for idx in token_batches(tok.lengths, batch_size, max_tokens):
                yield start, tok, idx

    def pad(item: tuple[int, Tokenized, np.ndarray]) -> tuple[np.ndarray, Any]:
        start, tok, idx = item
        return idx + start, prepare(tok, idx)

    yield from prefetch(batches(), pad, depth)


def as_tensors(features: dict[str, Any], pin: bool = False) -> dict[str, Any]:
    """NumPy features as CPU torch tensors (no copy), in pinned host memory when ``pin`` (for CUDA)."""
    import torch

    out: dict[str, Any] = {}
    for key, value in features.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
            if pin:
                value = value.pin_memory()
        out[key] = value
    return out


def to_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    """Tensors moved to ``device``: non-blocking when they sit in pinned memory; other entries unchanged."""
    return {k: v.to(device, non_blocking=v.is_pinned()) if hasattr(v, "is_pinned") else v
            for k, v in features.items()}
