"""LLM rerankers on a served model (backend=api): a real llama.cpp server running SmolLM2 on loopback.

The server tests skip, naming the reason, when ``llama_cpp`` is not installed (``pip install
"llama-cpp-python[server]==0.3.36"``, see docs/serving-llms.md) or the SmolLM2 GGUF is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rankwise.rerank.served import LogprobsUnavailable, ServedConfig, ServedUsage
from rankwise.rerank.spec import load_reranker, parse_spec
from rankwise.retrieval.errors import InputError
from tests._helpers import ROOT, FakeChatLM, free_port, kill_when
from tests.conftest import MODELS, SHARED_BEIR

GGUF = MODELS / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf" if MODELS else None
CRANFIELD = SHARED_BEIR / "cranfield"


# --- no server needed ---------------------------------------------------------------------------

def test_api_options_need_backend_api_and_an_llm_paradigm():
    spec = parse_spec("listwise:m,backend=api,base_url=http://127.0.0.1:8000/v1,concurrency=4,price_in=0.5")
    assert spec.options == {"backend": "api", "base_url": "http://127.0.0.1:8000/v1", "concurrency": 4,
                            "price_in": 0.5}
    with pytest.raises(InputError, match="needs backend=api"):
        parse_spec("listwise:m,base_url=http://127.0.0.1:8000/v1")
    with pytest.raises(InputError, match="not cross-encoder"):
        parse_spec("cross-encoder:m,backend=api")
    with pytest.raises(InputError, match="api_key=") as err:  # the key is never a spec option, nor echoed
        parse_spec("listwise:m,backend=api,api_key=sk-123")
    assert "sk-123" not in str(err.value)


@pytest.mark.parametrize("options, field", [({"base_url": "127.0.0.1:8000"}, "base_url"),
                                             ({"endpoint": "responses"}, "endpoint"),
                                             ({"concurrency": 0}, "concurrency"),
                                             ({"no_logprobs": "ignore"}, "no_logprobs"),
                                             ({"timeout": 0}, "timeout"),
                                             ({"price_out": -1}, "price_out")])
def test_bad_served_options_name_their_field(options, field):
    with pytest.raises(InputError) as err:
        ServedConfig.from_options(options)
    assert err.value.field == field


def test_usage_round_trips_and_prices_tokens():
    usage = ServedUsage(requests=3, cached=2, prompt_tokens=2_000_000, completion_tokens=10, cost=1.5,
                        extra={"prefix_missed": 1})
    assert ServedUsage.from_dict(usage.as_dict()) == usage
    assert usage.summary() == ("3 requests sent (2 answered from cache), 2000000 prompt + 10 completion tokens, "
                               "$1.5000")


class NoLogprobsLM(FakeChatLM):
    """The CausalLM methods the listwise reranker uses, as a server without log-probabilities answers them."""

    backend = "api"

    def __init__(self, fallback: bool) -> None:
        self.fallback, self.generated = fallback, 0

    def next_token_logits(self, prompts, token_ids=None, progress=False):
        raise LogprobsUnavailable("the server returned no log-probabilities", fallback=self.fallback)

    def generate(self, prompts, max_new_tokens=64, progress=False):
        self.generated += len(prompts)
        return ["C] > [A] > [B]"] * len(prompts)


def test_first_falls_back_to_generate_without_logprobs_or_refuses(caplog):
    from rankwise.rerank.listwise import ListwiseReranker

    lm = NoLogprobsLM(fallback=True)
    reranker = ListwiseReranker(lm, window=3, stride=3, backend=ServedConfig())
    with caplog.at_level("WARNING"):
        ranked = reranker.rerank("q", ["a", "b", "c"])
    assert [i for i, _ in ranked] == [2, 0, 1] and reranker.mode == "generate" and lm.generated == 1
    assert [r.message for r in caplog.records] == [
        "the server returned no log-probabilities; listwise falls back to mode=generate"]
    refusing = ListwiseReranker(NoLogprobsLM(fallback=False), window=3, stride=3, backend=ServedConfig())
    with pytest.raises(LogprobsUnavailable):
        refusing.rerank("q", ["a", "b", "c"])


def test_a_served_backend_refuses_an_in_process_model():
    from rankwise.rerank.listwise import ListwiseReranker

    class InProcess(NoLogprobsLM):
        backend = "torch"

    with pytest.raises(InputError, match="runs in this process"):
        ListwiseReranker(InProcess(True), backend=ServedConfig())


def test_an_unreachable_server_is_one_line_naming_base_url(tmp_path):
    if GGUF is None or not GGUF.exists():
        pytest.skip("the SmolLM2 GGUF (shared/assets/fetch-models.sh) supplies the tokenizer")
    port = free_port()  # nobody listens there
    reranker = load_reranker(f"pointwise-llm:{GGUF},backend=api,base_url=http://127.0.0.1:{port}/v1,"
                             f"max_retries=0,timeout=5,cache={tmp_path / 'cache'}")
    with pytest.raises(InputError) as err:
        reranker.rerank("q", ["a document"])
    assert err.value.field == "base_url" and f"127.0.0.1:{port}" in str(err.value)


# --- a real server: llama.cpp's OpenAI-compatible server running SmolLM2 on loopback -------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``http://127.0.0.1:PORT/v1`` of a llama.cpp server started for this module, stopped after it."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.skip('llama_cpp is not importable: pip install "llama-cpp-python[server]==0.3.36" '
                    "(builds from source, about 4 min; docs/serving-llms.md)")
    if GGUF is None or not GGUF.exists():
        pytest.skip("the SmolLM2 GGUF is missing (bash ../shared/assets/fetch-models.sh $RANKWISE_MODELS)")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "llama_cpp_server.py"), "--model", str(GGUF),
                                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=5) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the llama.cpp server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cranfield_lists(n_queries: int, size: int) -> list[tuple[str, list[str]]]:
    """``(query, documents)`` of the first Cranfield queries: judged documents first, then unjudged ones."""
    from rankwise.retrieval.formats import Corpus, read_qrels, read_queries

    if not CRANFIELD.is_dir():
        pytest.skip(f"{CRANFIELD} is missing")
    queries = read_queries(CRANFIELD)
    qrels = read_qrels(CRANFIELD / "qrels" / "test.tsv")
    corpus = Corpus(CRANFIELD)
    qids = sorted(qrels, key=lambda q: int(q))[:n_queries]
    filler = [f"{i}" for i in range(1, 40)]
    lists = []
    for q in qids:
        ids = list(dict.fromkeys(list(qrels[q])[: size // 2] + filler))[:size]
        docs = corpus.lookup(set(ids))
        lists.append((queries[q], [docs[d].full_text for d in ids]))
    return lists


def _spec(server: str, cache: Path, extra: str = "") -> str:
    return f"listwise:{GGUF},backend=api,base_url={server},cache={cache}{extra}"


@pytest.mark.slow  # the module's llama.cpp server is a process of its own
def test_served_first_ranks_as_in_process_on_the_same_prompts(server, tmp_path):
    from scipy.stats import kendalltau

    from rankwise.rerank.listwise import ListwiseReranker

    lists = _cranfield_lists(4, 5)
    served = load_reranker(_spec(server, tmp_path / "cache", ",window=5,stride=5"))
    local = ListwiseReranker(str(GGUF), window=5, stride=5)
    assert [served.prompt(q, d) for q, d in lists] == [local.prompt(q, d) for q, d in lists]
    theirs = served.score(lists)
    mine = local.score(lists)
    taus = [kendalltau(a, b).statistic for a, b in zip(theirs, mine)]
    top_same = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(theirs, mine)]
    usage = served.lm.engine.usage
    assert usage.requests == len(lists) and usage.cached == 0 and usage.prompt_tokens > 0
    assert np.mean(taus) >= 0.6 and sum(top_same) >= len(lists) - 1, (taus, top_same)
    # the log-probabilities themselves: the labels' served values against log_softmax of torch's logits
    prompts = [local.prompt(q, [local._passage(x) for x in d]) for q, d in lists]
    logits = local.lm.next_token_logits(prompts)
    lp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    served_lp = served.lm.next_token_logits(prompts, local.label_ids)
    assert served.lm.engine.usage.cached == len(lists)  # the same requests: answered from the cache
    assert np.abs(served_lp - lp[:, local.label_ids]).max() < 0.5


@pytest.mark.slow  # the module's llama.cpp server is a process of its own
def test_generate_mode_and_the_other_readers_run_on_the_server(server, tmp_path):
    lists = _cranfield_lists(1, 4)
    generate = load_reranker(_spec(server, tmp_path / "cache", ",window=4,mode=generate"))
    (scores,) = generate.score(lists)
    assert sorted(scores) == [1.0, 2.0, 3.0, 4.0] and generate.lm.engine.usage.completion_tokens > 1
    yesno = load_reranker(f"pointwise-llm:{GGUF},backend=api,base_url={server},cache={tmp_path / 'cache'}")
    (scores,) = yesno.score([(lists[0][0], lists[0][1][:2])])
    assert np.isfinite(scores).all() and yesno.lm.engine.usage.requests == 2
    # groupwise: shared-prefix groups go as one prompt per slot, read over the whole vocabulary
    group = load_reranker(f"groupwise:{GGUF},backend=api,base_url={server},cache={tmp_path / 'cache'},"
                          "group_size=2,rounds=1,levels=10")
    (scores,) = group.score([(lists[0][0], lists[0][1][:2])])
    assert len(scores) == 2 and np.isfinite(scores).all() and group.lm.engine.usage.requests >= 2


@pytest.mark.slow  # the module's llama.cpp server is a process of its own
def test_chat_endpoint_reads_the_answer_after_the_prefix_the_model_writes(server, tmp_path):
    lists = _cranfield_lists(1, 4)
    chat = load_reranker(_spec(server, tmp_path / "cache", ",window=4,endpoint=chat"))
    (scores,) = chat.score(lists)
    usage = chat.lm.engine.usage
    assert sorted(scores) == [1.0, 2.0, 3.0, 4.0] and usage.requests == 1
    assert usage.unseen + usage.extra.get("prefix_missed", 0) * 4 <= 4


def _write_run(path: Path, lists_of_ids: dict[str, list[str]]) -> Path:
    lines = [f"{q} Q0 {d} {r + 1} {len(ids) - r} bm25" for q, ids in lists_of_ids.items() for r, d in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_killed_served_rerank_resends_only_unfinished_requests(server, tmp_path):
    if not CRANFIELD.is_dir():
        pytest.skip(f"{CRANFIELD} is missing")
    run = _write_run(tmp_path / "bm25.trec", {"1": [str(d) for d in range(1, 9)]})
    cache = tmp_path / "cache"
    out = tmp_path / "served.trec"
    cmd = [sys.executable, "-m", "rankwise", "rerank", str(run), "--queries", str(CRANFIELD), "--corpus",
           str(CRANFIELD), "--depth", "8", "--out", str(out),
           "--reranker", _spec(server, cache, ",window=4,stride=2,concurrency=1")]
    total = 3  # one query, windows [4, 8), [2, 6), [0, 4)

    def cached() -> int:
        return sum(1 for _ in cache.glob("*/*.json")) if cache.is_dir() else 0

    env = dict(os.environ)
    assert kill_when(cmd, lambda: cached() >= 1, env=env, timeout=300) is None  # killed part-way
    done = cached()
    assert 1 <= done < total and not out.exists()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{total - done} requests sent ({done} answered from cache)" in again.stderr
    ranked = out.read_text()
    assert len(ranked.splitlines()) == 8 and cached() == total
    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and f"0 requests sent ({total} answered from cache)" in third.stderr
    assert out.read_text() == ranked


def test_the_request_loop_stops_when_its_engine_lets_it_go():
    import asyncio
    import gc

    from rankwise.rerank.served import _LoopThread

    kept, dropped = _LoopThread(), _LoopThread()
    assert dropped.run(asyncio.sleep(0, result=3)) == 3
    thread, loop = dropped.thread, dropped.loop
    del dropped
    gc.collect()
    thread.join(5)
    assert not thread.is_alive() and loop.is_closed()  # no thread left behind per released engine
    assert kept.thread.is_alive()
    kept.close()
    assert not kept.thread.is_alive() and kept.loop.is_closed()
