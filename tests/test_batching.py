"""The shared data path: tokenize once, token-budget batches, prefetch; vectors and scores unchanged."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rankwise.retrieval.batching import prefetch, token_batches, tokenize
from rankwise.testing import corpus_texts
from tests._helpers import run_cli, write_corpus


def _check_budget(lengths: np.ndarray, batches: list[np.ndarray], batch_size: int, max_tokens: int | None) -> None:
    flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every text exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if max_tokens is not None and len(b) > 1:
            assert len(b) * lengths[b].max() <= max_tokens
    widths = [int(lengths[b].max()) for b in batches]
    assert widths == sorted(widths, reverse=True)  # longest first


@pytest.mark.parametrize("max_tokens", [None, 1, 7, 64, 500, 10_000])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_token_budget_is_never_exceeded_and_covers_every_text_once(max_tokens, batch_size):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=257)
    batches = token_batches(lengths, batch_size, max_tokens)
    _check_budget(lengths, batches, batch_size, max_tokens)


def test_budget_fills_short_batches_and_isolates_a_text_longer_than_the_budget():
    lengths = np.array([5] * 40 + [300])
    batches = token_batches(lengths, 64, max_tokens=100)
    assert [len(b) for b in batches] == [1, 20, 20]
    assert batches[0].tolist() == [40]


def test_empty_inputs():
    assert token_batches([], 8, 100) == []
    assert len(tokenize(None, [])) == 0
    assert list(prefetch([], lambda x: x)) == []


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="max_tokens"):
        token_batches([3], 8, 0)


def test_prefetch_keeps_order_runs_ahead_and_raises_errors():
    seen: list[int] = []

    def prepare(i: int) -> int:
        seen.append(i)
        return i * i

    gen = prefetch(range(10), prepare, depth=2)
    assert next(gen) == 0
    time.sleep(0.2)
    assert 2 <= len(seen) <= 4  # prepared ahead, but bounded by the queue
    assert list(gen) == [i * i for i in range(1, 10)]

    def boom(i: int) -> int:
        if i == 3:
            raise RuntimeError("bad batch 3")
        return i

    with pytest.raises(RuntimeError, match="bad batch 3"):
        list(prefetch(range(10), boom))
    before = threading.active_count()
    gen = prefetch(range(1000), lambda i: i, depth=2)
    next(gen)
    gen.close()  # stops the producer
    time.sleep(0.2)
    assert threading.active_count() <= before


def test_padded_features_equal_the_tokenizers_own_padding(tiny_encoder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    texts = corpus_texts()[:50] + ["wing " * 300]
    tok = tokenize(tokenizer, texts, max_length=64)
    idx = np.array([3, 50, 7])
    mine = tok.pad(idx)
    ref = tokenizer([texts[i] for i in idx], padding=True, truncation="longest_first", max_length=64, return_tensors="np")
    assert set(mine) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(mine[k], ref[k])
    pairs = tokenize(tokenizer, texts[:10], texts[10:20], max_length=16)
    ref = tokenizer(texts[:10], texts[10:20], padding=True, truncation="longest_first", max_length=16, return_tensors="np")
    for k in ref:
        np.testing.assert_array_equal(pairs.pad(np.arange(10))[k], ref[k])


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus_texts()[:120] + ["wing " * 300, "a"]  # 120 texts: 8 batches of 16, many token budgets


@pytest.mark.parametrize("max_tokens", [None, 300])
def test_encoder_vectors_equal_sentence_transformers(tiny_encoder, texts, max_tokens):
    from sentence_transformers import SentenceTransformer

    from rankwise.retrieval.encoder import Encoder

    from rankwise.retrieval.batching import BatchingConfig

    reference = SentenceTransformer(str(tiny_encoder), device="cpu").encode(texts, batch_size=16)
    encoder = Encoder(str(tiny_encoder), batch_size=16, batching=BatchingConfig(max_tokens=max_tokens))
    prefetched = encoder.encode(texts, task="document")
    np.testing.assert_allclose(prefetched.vectors, reference, atol=1e-5)
    assert prefetched.truncated == 1  # the long text, counted per call: a second call counts it again, once
    assert encoder.encode(texts, task="document").truncated == 1
    plain = Encoder(str(tiny_encoder), batch_size=16, batching=BatchingConfig(max_tokens=max_tokens, prefetch_depth=0))
    np.testing.assert_allclose(plain.encode_docs(texts), prefetched.vectors, atol=1e-6)  # prefetch == plain
    # tokenized in slices, as on a GPU: the same vectors, the long text counted once whatever the slices
    sliced = Encoder(str(tiny_encoder), batch_size=16, batching=BatchingConfig(max_tokens=max_tokens, slice_size=7))
    got = sliced.encode(texts, task="document")
    np.testing.assert_allclose(got.vectors, prefetched.vectors, atol=1e-6)
    assert got.truncated == 1
    assert encoder.encode_docs([]).shape == (0, encoder.dim) and encoder.encode([]).truncated == 0


def test_batching_config_is_checked_and_frozen():
    import dataclasses

    from rankwise.retrieval.batching import SLICE_SIZE, BatchingConfig
    from rankwise.retrieval.errors import InputError

    config = BatchingConfig()
    assert (config.max_tokens, config.prefetch_depth, config.slice_size) == (None, 2, None)
    assert config.slices(accelerated=True, count=10) == SLICE_SIZE and config.slices(accelerated=False, count=10) == 10
    assert BatchingConfig(slice_size=7).slices(accelerated=False, count=10) == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_tokens = 5  # type: ignore[misc]
    for bad in ({"max_tokens": 0}, {"slice_size": 0}, {"prefetch_depth": -1}, {"max_tokens": True}):
        with pytest.raises(InputError) as err:
            BatchingConfig(**bad)
        assert err.value.field == next(iter(bad))


def test_encoder_keeps_a_models_own_preprocess_when_it_differs(tiny_encoder, texts, monkeypatch):

    from rankwise.retrieval.encoder import Encoder

    encoder = Encoder(str(tiny_encoder), batch_size=16)
    calls = []
    original = encoder.model.preprocess

    def preprocess(batch, **kwargs):
        calls.append(len(batch))
        features = original(batch, **kwargs)
        features["input_ids"] = features["input_ids"].flip(0) if len(batch) > 1 else features["input_ids"]
        return features

    monkeypatch.setattr(encoder.model, "preprocess", preprocess)
    encoder.encode_docs(texts[:40])
    assert len(calls) > 1  # the check, then one preprocess per batch


@pytest.mark.parametrize("max_tokens", [None, 200])
def test_cross_encoder_scores_equal_predict(tiny_cross_encoder, texts, max_tokens):
    import torch
    from sentence_transformers import CrossEncoder

    from rankwise.rerank.cross_encoder import CrossEncoderReranker

    pairs = [("airflow over a wing", t) for t in texts[:60]] + [("gene " * 40, "protein cell"), ("wing", texts[-2])]
    reference = CrossEncoder(str(tiny_cross_encoder)).predict(pairs, activation_fn=torch.nn.Identity(), batch_size=8)
    from rankwise.retrieval.batching import BatchingConfig

    def reranker(**batching):
        return CrossEncoderReranker(str(tiny_cross_encoder), batch_size=8,
                                    batching=BatchingConfig(max_tokens=max_tokens, **batching))

    first = reranker()
    scores = first.score_pairs(pairs)
    np.testing.assert_allclose(scores, np.asarray(reference, dtype=float), atol=1e-5)
    truncated = first.stats.truncated
    assert truncated > 0
    np.testing.assert_allclose(reranker(prefetch_depth=0).score_pairs(pairs), scores, atol=1e-6)
    sliced = reranker(slice_size=9)  # tokenized in slices, as on a GPU
    np.testing.assert_allclose(sliced.score_pairs(pairs), scores, atol=1e-6)
    assert sliced.stats.truncated == truncated


def test_index_cli_max_tokens(capsys, tmp_path, tiny_encoder):
    from rankwise.retrieval.open import open_retriever

    corpus = write_corpus(tmp_path / "corpus.jsonl", corpus_texts()[:40])  # at 40 tokens a batch: one text or two
    code, _, err = run_cli(capsys, "index", corpus, "--out", tmp_path / "bad", "--encoder", tiny_encoder,
                           "--max-tokens", "0")
    assert code == 2 and "option '--max-tokens': must be >= 1, got 0" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "index", corpus, "--out", tmp_path / "idx", "--encoder", tiny_encoder,
                           "--max-tokens", "40")
    assert code == 0, err
    assert len(open_retriever(tmp_path / "idx").index) == 40


def test_fast_tokenization_equals_the_tokenizers_call_and_falls_back_when_it_differs(tiny_encoder, monkeypatch):
    from transformers import AutoTokenizer

    from rankwise.retrieval import batching

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    texts = corpus_texts()[:80] + ["wing " * 300, ""]
    for max_length in (None, 16, 64):
        fast, _ = batching._fast_ids(tokenizer, texts, None, max_length)
        assert fast == batching._call_ids(tokenizer, texts, None, max_length)
        assert batching._fast_ids(tokenizer, texts[:20], texts[20:40], max_length)[0] == \
            batching._call_ids(tokenizer, texts[:20], texts[20:40], max_length)
    assert batching._fast_ids(tokenizer, texts, None, None, False)[0] == batching._call_ids(tokenizer, texts, None, None, False)
    assert tokenizer.backend_tokenizer.padding is None  # the tokenizer's settings are put back
    original = batching._call_ids

    def differs(tok, t, p, m, special=True):  # a tokenizer whose __call__ does more than the Rust tokenizer
        out = original(tok, t, p, m, special)
        out["input_ids"] = [ids + [7] for ids in out["input_ids"]]
        return out

    monkeypatch.setattr(batching, "_call_ids", differs)
    assert batching._fast_ids(tokenizer, texts, None, 64) is None
    assert tokenize(tokenizer, texts, max_length=64).ids["input_ids"][0][-1] == 7  # tokenize() fell back


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("slice_size", [1, 7, 10_000])
def test_stream_batches_cover_every_text_once_with_the_same_features(tiny_encoder, depth, slice_size):
    from transformers import AutoTokenizer

    from rankwise.retrieval.batching import stream_batches

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    texts = corpus_texts()[:60] + ["wing " * 300, "a"]
    whole = tokenize(tokenizer, texts, max_length=64)
    seen, slices = [], []
    for idx, features in stream_batches(tokenizer, texts, max_length=64, batch_size=5, max_tokens=120, depth=depth,
                                        slice_size=slice_size, on_slice=lambda tok, start: slices.append((start, len(tok)))):
        assert 1 <= len(idx) <= 5 and (len(idx) == 1 or features["input_ids"].size <= 120)
        assert len(set((idx // slice_size).tolist())) == 1  # a batch stays in its slice
        for row, i in enumerate(idx):
            n = int(whole.lengths[i])
            assert features["input_ids"][row, :n].tolist() == whole.ids["input_ids"][i]
            assert features["attention_mask"][row].sum() == n
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(texts)))
    assert [s for s, _ in slices] == list(range(0, len(texts), slice_size))


def test_stream_batches_raise_a_tokenizer_error_in_the_caller():
    from rankwise.retrieval.batching import stream_batches

    class Broken:
        def __call__(self, *args, **kwargs):
            raise ValueError("cannot tokenize")

    with pytest.raises(ValueError, match="cannot tokenize"):
        list(stream_batches(Broken(), ["a", "b"], max_length=8, batch_size=2))
