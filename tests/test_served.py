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
from tests._helpers import ROOT, free_port, kill_when
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


class NoLogprobsLM:
    """The CausalLM methods the listwise reranker uses, as a server without log-probabilities answers them."""

    backend = "api"

    def __init__(self, fallback: bool) -> None:
        self.fallback, self.generated = fallback, 0

    def chat(self, user, system=None, assistant_prefix=""):
        return f"{system}\n{user}\n{assistant_prefix}"

    def truncate(self, text, max_tokens):
        return text, False

    def single_token_ids(self, labels):
        return [ord(x) for x in labels]

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
