"""A served causal LM: any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, a hosted API) as the
engine of the LLM rerankers.

:class:`ServedLMEngine` is the engine :func:`rankwise.rerank.lm_engines.lm_engine` picks for a
:class:`ServedConfig` (the spec option ``backend=api``). It keeps the contract of the in-process
engines, so pointwise (yes/no, ERank), listwise (FIRST, generate, eliminate, reason) and groupwise
reranking run unchanged: the prompts are built with the model's own tokenizer and chat template
exactly as in-process, sent as text through the maintained ``openai`` client (``AsyncOpenAI``,
its retries with exponential backoff and timeouts), and

- ``next_token_logits`` reads the first generated token's ``top_logprobs`` (one token generated):
  the log-probabilities of the tokens returned, and for every other token an even share of the
  probability the returned ones leave (so log-softmax gives the returned values back; a token read
  that way is counted as ``unseen`` in :attr:`ServedLMEngine.usage`);
- ``generate`` decodes greedily (``temperature=0``) and returns the text's token ids;
- shared-prefix groups (:meth:`rankwise.rerank.llm.CausalLM.iter_tail_logits`) are sent as one
  prompt per tail (``shared_prefix = False``); the server's prefix cache (vLLM, SGLang) then does
  what the shared-prefix mask does in-process.

Up to ``concurrency`` requests are in flight at once, so a server's continuous batching sees the
windows (or documents, or groups) of many queries together; the rerankers' own order of steps is
kept (the sliding windows of one query still follow each other). Every answer is stored on disk by
request hash (:mod:`rankwise.rerank.response_cache`) before it is used, so a killed run, rerun with
the same command, sends only the requests it had not finished. ``endpoint="completions"``
(``/v1/completions``, the prompt text as in-process) is exact; ``endpoint="chat"`` sends the same
turns as chat messages for servers that have no completions endpoint (hosted chat models), and
reads the answer after the assistant prefix (``[`` for FIRST) that the model writes itself.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.extras import requires

log = logging.getLogger(__name__)

ENDPOINTS = ("completions", "chat")
NO_LOGPROBS = ("generate", "error")
KEY_VARIABLES = ("RANKWISE_API_KEY", "OPENAI_API_KEY")  # read in this order; never written anywhere
# the spec options of ``backend=api`` (everything of ServedConfig but the key variable's value)
OPTIONS = ("base_url", "endpoint", "served_model", "tokenizer", "concurrency", "timeout", "max_retries",
           "top_logprobs", "no_logprobs", "cache", "price_in", "price_out", "api_key_env")
# chat turns are marked in the prompt text with these, so the engine can send them as messages
_TURN = "<|rankwise:{role}|>"
_TURN_RE = re.compile(r"<\|rankwise:(system|user|assistant)\|>")
CHAT_TEMPLATE = ("{%- for m in messages %}<|rankwise:{{ m['role'] }}|>{{ m['content'] }}{%- endfor %}"
                 "{%- if add_generation_prompt %}<|rankwise:assistant|>{%- endif %}")


class LogprobsUnavailable(InputError):
    """The server answered without log-probabilities; ``fallback``: the reranker may decode instead."""

    def __init__(self, message: str, *, fallback: bool) -> None:
        super().__init__(message, field="no_logprobs")
        self.fallback = fallback


@dataclass(frozen=True)
class ServedConfig:
    """How to reach a served model (the ``backend=api`` options of a reranker spec).

    ``base_url``: the server's OpenAI-compatible root (``http://host:8000/v1``; None: ``$OPENAI_BASE_URL``,
    else OpenAI's); ``endpoint``: ``completions`` or ``chat``; ``served_model``: the name the server
    knows the model by (default: the spec's MODEL); ``tokenizer``: where the model's tokenizer is read
    (default: MODEL); ``concurrency``: requests in flight; ``timeout`` (s) and ``max_retries`` of each
    request; ``top_logprobs``: log-probabilities asked for per token (vLLM allows 20 by default,
    ``--max-logprobs``); ``no_logprobs``: what FIRST does on a server that returns none (``generate``:
    decode the permutation instead, with a notice; ``error``: stop); ``cache``: the response folder
    (default ``$RANKWISE_CACHE/llm-responses``; ``off``: none); ``price_in``/``price_out``: USD per
    million prompt / completion tokens, for the cost in the summary; ``api_key_env``: the environment
    variable holding the API key (default ``RANKWISE_API_KEY``, then ``OPENAI_API_KEY``).
    """

    base_url: str | None = None
    endpoint: str = "completions"
    served_model: str | None = None
    tokenizer: str | None = None
    concurrency: int = 8
    timeout: float = 600.0
    max_retries: int = 5
    top_logprobs: int = 20
    no_logprobs: str = "generate"
    cache: str | None = None
    price_in: float = 0.0
    price_out: float = 0.0
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if self.base_url is not None and not re.match(r"^https?://[^/\s]+", str(self.base_url)):
            raise InputError(f"base_url={self.base_url!r} is not an http:// or https:// URL", field="base_url")
        if self.endpoint not in ENDPOINTS:
            raise InputError(f"endpoint={self.endpoint!r}; choose from {', '.join(ENDPOINTS)}", field="endpoint")
        if self.no_logprobs not in NO_LOGPROBS:
            raise InputError(f"no_logprobs={self.no_logprobs!r}; choose from {', '.join(NO_LOGPROBS)}",
                             field="no_logprobs")
        for name, low in (("concurrency", 1), ("top_logprobs", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"{name} must be an integer of at least {low}, got {value!r}", field=name)
        for name in ("timeout", "price_in", "price_out"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or \
                    (name == "timeout" and value == 0):
                raise InputError(f"{name} must be a {'positive' if name == 'timeout' else 'non-negative'} number, "
                                 f"got {value!r}", field=name)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "ServedConfig":
        """The config of a spec's options (those of :data:`OPTIONS`; values as the spec parser casts them)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in known}
        for name in ("base_url", "served_model", "tokenizer", "cache", "api_key_env", "endpoint", "no_logprobs"):
            if name in values:
                values[name] = str(values[name])
        return cls(**values)


@dataclass
class ServedUsage:
    """What the server was asked: requests sent and answered from the cache, tokens, cost."""

    requests: int = 0  # answered by the server in this process
    cached: int = 0  # answered from the response cache
    prompt_tokens: int = 0  # of the requests sent (the server's own count)
    completion_tokens: int = 0
    unseen: int = 0  # log-probabilities read for a token outside the returned top_logprobs
    cost: float = 0.0  # USD, from price_in / price_out
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        out["cost"] = round(self.cost, 6)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ServedUsage":
        """The inverse of :meth:`as_dict`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in values.items() if k in known},
                   extra={k: v for k, v in values.items() if k not in known})

    def summary(self) -> str:
        """One line: ``N requests sent (M from cache), P prompt + C completion tokens[, $X]``."""
        cost = f", ${self.cost:.4f}" if self.cost else ""
        return (f"{self.requests} requests sent ({self.cached} answered from cache), {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens{cost}")


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str, gguf_file: str | None) -> Any:
    """A tokenizer, loaded once per process (from a GGUF file that takes seconds); engines take copies."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel what is in flight on ``loop`` and stop it (its thread ends)."""
    if loop.is_closed() or not thread.is_alive():
        return

    def stop() -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.stop()

    loop.call_soon_threadsafe(stop)
    thread.join(timeout=5)
    if not thread.is_alive():
        loop.close()


class _LoopThread:
    """One asyncio event loop in a daemon thread: the client's requests run there, the caller waits. The
    loop stops when this object is collected (its engine released), on :meth:`close`, or at exit (an
    interrupted run leaves requests in flight: they are cancelled on the way out)."""

    def __init__(self) -> None:
        import weakref

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rankwise-served", daemon=True)
        self.thread.start()
        self._stop = weakref.finalize(self, _stop_loop, self.loop, self.thread)

    def close(self) -> None:
        """Cancel what is in flight and stop the loop (its thread ends)."""
        self._stop()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class ServedLMEngine:
    """The engine of a causal LM behind an OpenAI-compatible server (see the module docstring)."""

    backend = "api"
    model = None
    device = None
    session = None
    export = None
    batch_tokens = None
    shared_prefix = False  # CausalLM.iter_tail_logits sends one prompt per tail

    def __init__(self, model: str, path: str, *, gguf_file: str | None = None,
                 config: ServedConfig | None = None) -> None:
        requires("openai", "api", "backend=api")  # checked here, used in the request loop
        self.config = config or ServedConfig()
        self.name = self.config.served_model or model
        try:
            if self.config.tokenizer:
                from rankwise.retrieval.backend.sources import gguf_location
                from rankwise.retrieval.models import resolve_model

                path, gguf_file = gguf_location(resolve_model(self.config.tokenizer))
            self.tokenizer = copy.deepcopy(_tokenizer(path, gguf_file))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load the tokenizer of the served model: {str(err).splitlines()[0]} "
                             "(name a local one with tokenizer=)", path=path, field="tokenizer") from None
        if self.config.endpoint == "chat":
            self.tokenizer.chat_template = CHAT_TEMPLATE  # CausalLM.chat marks the turns; _messages reads them
        # one engine call carries many requests; `concurrency` of them are in flight at a time
        self.batch_size = max(256, 4 * self.config.concurrency)
        self.usage = ServedUsage()
        cache = self.config.cache
        if cache == "off":
            self.cache = None
        else:
            from rankwise.rerank.response_cache import ResponseCache
            from rankwise.retrieval.paths import cache_root

            self.cache = ResponseCache(Path(cache).expanduser() if cache else cache_root() / "llm-responses")
        self.logprobs: bool | None = None  # whether the server returns log-probabilities (None: not asked yet)
        self._token_ids: dict[str, int | None] = {}
        self._loop: _LoopThread | None = None
        self._client: Any = None

    # --- requests -----------------------------------------------------------------------------

    def _api_key(self) -> str:
        names = (self.config.api_key_env,) if self.config.api_key_env else KEY_VARIABLES
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        if self.config.api_key_env:
            raise InputError(f"the environment variable {self.config.api_key_env} holding the API key is not set",
                             field="api_key_env")
        return "EMPTY"  # a local server (vLLM without --api-key, llama.cpp) takes any key

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _messages(self, text: str) -> tuple[list[dict[str, str]], str]:
        """The chat messages of a prompt marked by :data:`CHAT_TEMPLATE`, and the assistant prefix after them."""
        parts = _TURN_RE.split(text)
        messages, prefix = [], ""
        for role, content in zip(parts[1::2], parts[2::2]):
            messages.append({"role": role, "content": content})
        if messages and messages[-1]["role"] == "assistant":
            prefix = messages.pop()["content"]
        if not messages:
            raise InputError("the prompt has no chat turns (endpoint=chat needs the chat template)", field="endpoint")
        return messages, prefix

    def _body(self, text: str, max_tokens: int, logprobs: bool) -> dict[str, Any]:
        k = self.config.top_logprobs
        if self.config.endpoint == "chat":
            messages, prefix = self._messages(text)
            body: dict[str, Any] = {"model": self.name, "messages": messages, "temperature": 0.0,
                                    "max_tokens": max_tokens + (len(self.tokenizer.encode(prefix)) if prefix else 0)}
            if logprobs:
                body.update(logprobs=True, top_logprobs=k)
            return body
        body = {"model": self.name, "prompt": text, "temperature": 0.0, "max_tokens": max_tokens}
        if logprobs:
            body["logprobs"] = k
        return body

    def _record(self, response: Any) -> dict[str, Any]:
        """The part of a response kept: text, generated tokens with their top log-probabilities, usage."""
        choice = response.choices[0]
        tokens: list[str] = []
        top: list[list[list[Any]]] | None = None
        lp = getattr(choice, "logprobs", None)
        if self.config.endpoint == "chat":
            text = choice.message.content or ""
            content = getattr(lp, "content", None) if lp is not None else None
            if content:
                tokens = [c.token for c in content]
                top = [[[t.token, float(t.logprob)] for t in (c.top_logprobs or [])] for c in content]
        else:
            text = choice.text or ""
            if lp is not None and getattr(lp, "top_logprobs", None):
                tokens = list(lp.tokens or [])
                top = [[[t, float(v)] for t, v in (pos or {}).items()] for pos in lp.top_logprobs]
        if top is not None and not any(top):
            top = None
        usage = getattr(response, "usage", None)
        return {"text": text, "tokens": tokens, "top": top, "finish_reason": choice.finish_reason,
                "usage": {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                          "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}}

    async def _send_all(self, jobs: list[tuple[int, str, dict[str, Any]]], out: list[Any]) -> None:
        import openai

        if self._client is None:
            self._client = openai.AsyncOpenAI(base_url=self.config.base_url, api_key=self._api_key(),
                                              timeout=self.config.timeout, max_retries=self.config.max_retries)
        gate = asyncio.Semaphore(self.config.concurrency)
        create = self._client.chat.completions.create if self.config.endpoint == "chat" \
            else self._client.completions.create

        async def one(i: int, key: str, body: dict[str, Any]) -> None:
            async with gate:
                try:
                    response = await create(**body)
                except openai.AuthenticationError:
                    raise InputError("the server refused the API key (set RANKWISE_API_KEY or OPENAI_API_KEY)",
                                     field="api_key") from None
                except (openai.APIConnectionError, openai.APITimeoutError) as err:
                    raise InputError(f"no answer from {self.config.base_url or 'the API'} after "
                                     f"{self.config.max_retries} retries ({type(err).__name__})",
                                     field="base_url") from None
                except openai.APIStatusError as err:
                    message = str(getattr(err, "message", err)).splitlines()[0][:300]
                    raise InputError(f"the server answered {err.status_code}: {message}",
                                     field="model" if err.status_code == 404 else "reranker") from None
            record = self._record(response)
            if self.cache is not None:
                self.cache.put(key, record)
            self.usage.requests += 1
            self.usage.prompt_tokens += record["usage"]["prompt_tokens"]
            self.usage.completion_tokens += record["usage"]["completion_tokens"]
            self.usage.cost = (self.usage.prompt_tokens * self.config.price_in
                               + self.usage.completion_tokens * self.config.price_out) / 1e6
            out[i] = record

        tasks = [asyncio.ensure_future(one(i, key, body)) for i, key, body in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # the first failure stops the rest
                task.cancel()

    def request(self, texts: Sequence[str], max_tokens: int, logprobs: bool) -> list[dict[str, Any]]:
        """One response record per prompt text: from the cache when it holds it, else from the server."""
        from rankwise.rerank.response_cache import request_key

        out: list[Any] = [None] * len(texts)
        jobs = []
        for i, text in enumerate(texts):
            body = self._body(text, max_tokens, logprobs)
            key = request_key(self.config.endpoint, body)
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                out[i] = hit
                self.usage.cached += 1
            else:
                jobs.append((i, key, body))
        if jobs:
            if self._loop is None:
                self._loop = _LoopThread()
            self._loop.run(self._send_all(jobs, out))
        return out

    # --- reading answers ------------------------------------------------------------------------

    def _token_id(self, token: str) -> int | None:
        """The id of a token the server names by its text (None: not one token of the local tokenizer)."""
        if token not in self._token_ids:
            ids = self.tokenizer.encode(token, add_special_tokens=False)
            self._token_ids[token] = ids[0] if len(ids) == 1 else None
        return self._token_ids[token]

    def _answer_position(self, text: str, record: dict[str, Any]) -> tuple[int, str]:
        """``(position, merged prefix)``: where the answer starts among the generated tokens -- 0, or (chat)
        after the assistant prefix the model wrote itself -- and the prefix to cut from each candidate
        token there when the model wrote it merged with the answer (``[A`` for ``[`` then ``A``)."""
        if self.config.endpoint != "chat":
            return 0, ""
        prefix = self._messages(text)[1].strip()
        if not prefix:
            return 0, ""
        written = ""
        for pos, token in enumerate(record["tokens"]):
            if written.strip() == prefix:
                return pos, ""
            if pos == 0 and token.strip().startswith(prefix) and token.strip() != prefix:
                return 0, prefix
            written += token
            if not prefix.startswith(written.strip()):
                break
        self.usage.extra["prefix_missed"] = self.usage.extra.get("prefix_missed", 0) + 1
        return 0, ""

    def _check_logprobs(self, records: list[dict[str, Any]]) -> None:
        if all(r["top"] for r in records):
            self.logprobs = True
            return
        self.logprobs = False
        fallback = self.config.no_logprobs == "generate"
        raise LogprobsUnavailable(f"the server at {self.config.base_url} returned no log-probabilities "
                                  f"(endpoint={self.config.endpoint}); see docs/serving-llms.md for the engines "
                                  "that do", fallback=fallback)

    def next_token_logits(self, sequences: Sequence[Sequence[int]], token_ids: Sequence[int] | None) -> np.ndarray:
        """Log-probabilities of the first answer token (``token_ids`` or the whole vocabulary), from
        ``top_logprobs``; a token outside the returned ones gets an even share of the probability they leave."""
        if self.logprobs is False:
            self._check_logprobs([{"top": None}])
        texts = [self._text(s) for s in sequences]
        records = self.request(texts, 1, logprobs=True)
        self._check_logprobs(records)
        columns = list(token_ids) if token_ids is not None else None
        where = {t: c for c, t in enumerate(columns)} if columns is not None else None
        vocab = len(self.tokenizer)
        out = np.empty((len(texts), len(columns) if columns is not None else vocab), dtype=np.float32)
        for r, (text, record) in enumerate(zip(texts, records)):
            pos, merged = self._answer_position(text, record)
            top = record["top"][pos] if pos < len(record["top"]) else []
            if merged:
                top = [[t.strip()[len(merged):], v] for t, v in top if t.strip().startswith(merged)]
            values = np.array([v for _, v in top], dtype=np.float64)
            # the probability the returned tokens leave, spread evenly over the others: the returned
            # values stay exact log-probabilities (log_softmax of the row gives them back)
            rest = max(1.0 - float(np.exp(values).sum()), 1e-12)
            out[r] = np.log(rest / max(vocab - len(values), 1))
            seen = set()
            for token, value in top:
                tid = self._token_id(token)
                col = tid if where is None else where.get(tid) if tid is not None else None
                if col is not None and col not in seen:
                    out[r, col] = value
                    seen.add(col)
            if where is not None:
                self.usage.unseen += len(columns) - len(seen)
        return out

    def generate(self, sequences: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (``temperature=0``) as token ids of the local tokenizer."""
        texts = [self._text(s) for s in sequences]
        records = self.request(texts, max_new_tokens, logprobs=False)
        out = []
        for text, record in zip(texts, records):
            answer = record["text"]
            if self.config.endpoint == "chat":  # the model wrote the assistant prefix itself: drop it
                prefix = self._messages(text)[1].strip()
                if prefix and answer.lstrip().startswith(prefix):
                    answer = answer.lstrip()[len(prefix):]
            out.append(self.tokenizer.encode(answer, add_special_tokens=False))
        return out


def served_usage(reranker: Any) -> ServedUsage | None:
    """The :class:`ServedUsage` of a reranker's served LM (through a passage wrapper too), else None."""
    for holder in (reranker, getattr(reranker, "inner", None)):
        engine = getattr(getattr(holder, "lm", None), "engine", None)
        if isinstance(getattr(engine, "usage", None), ServedUsage):
            return engine.usage
    return None

