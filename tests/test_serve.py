"""``rankwise serve``: every endpoint through a real HTTP client (httpx), limits, batching, disconnects, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from rankwise.rerank.server import Limits, Services, create_app
from rankwise.rerank.server.batcher import DynamicBatcher, QueueFull
from rankwise.rerank.server.metrics import Metrics
from rankwise.rerank.server.services import batch_invariant, server_spec
from rankwise.retrieval.backend.value import ONNX_INT8

DOCS = ["heart blood cell", {"text": "wing airflow shock wave"}, "cancer gene protein virus vaccine", "ünïcödé ☃ 心臓"]


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder):
    from rankwise.rerank.spec import load_reranker

    return load_reranker(f"cross-encoder:{tiny_cross_encoder}")


def _services(reranker) -> Services:
    return Services(reranker=reranker, reranker_name="tiny-ce")


def ask(app, fn: Callable[[httpx.AsyncClient], Awaitable[Any]], headers: dict[str, str] | None = None) -> Any:
    """Run ``fn(client)`` with an httpx client talking to ``app`` (ASGI transport)."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rankwise", headers=headers) as client:
            return await fn(client)

    return asyncio.run(main())


def post(app, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return ask(app, lambda c: c.post(path, json=body, **kwargs) if body is not None else c.post(path, **kwargs))


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] and error["message"]
    return error


# --- /v1/rerank ------------------------------------------------------------------------------------------


def test_rerank_cohere_shape_and_scores(reranker):
    app = create_app(_services(reranker))
    r = post(app, "/v1/rerank", {"query": "heart ☃", "documents": DOCS, "top_n": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-ce" and body["id"]
    texts = [d if isinstance(d, str) else d["text"] for d in DOCS]
    expected = reranker.rerank("heart ☃", texts)[:3]
    assert [x["index"] for x in body["results"]] == [i for i, _ in expected]
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert [x["document"]["text"] for x in body["results"]] == [texts[i] for i, _ in expected]  # unicode kept
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_rerank_top_n_larger_than_the_list_and_absent(reranker):
    app = create_app(_services(reranker))
    big = post(app, "/v1/rerank", {"query": "gene", "documents": DOCS, "top_n": 50}).json()["results"]
    assert sorted(x["index"] for x in big) == list(range(len(DOCS)))
    assert all("document" not in x for x in big)  # return_documents defaults to false
    every = post(app, "/v1/rerank", {"query": "gene", "documents": DOCS}).json()["results"]
    assert every == big


def test_rerank_empty_document_list(reranker):
    app = create_app(_services(reranker))
    r = post(app, "/v1/rerank", {"query": "gene", "documents": []})
    assert r.status_code == 200 and r.json()["results"] == []


@pytest.mark.parametrize("body, field", [
    ({"documents": ["a"]}, "query"),
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "q"}, "documents"),
    ({"query": "q", "documents": "not a list"}, "documents"),
    ({"query": "q", "documents": [{"title": "no text"}]}, "documents[0]"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": [3]}, "documents[0]"),
])
def test_rerank_schema_violations_are_422(reranker, body, field):
    error = _error(post(create_app(_services(reranker)), "/v1/rerank", body), 422)
    assert error["field"].startswith(field)


@pytest.mark.parametrize("content, message", [
    (b'{"query": "q", "documents": [', "malformed JSON: "),
    (b"not json at all", "malformed JSON: "),
    (b"[1, 2]", "the body must be a JSON object: "),
])
def test_malformed_json_is_422(reranker, content, message):
    """Bytes that are not JSON, and JSON that is not an object: 422 naming the body, each with its own reason."""
    error = _error(post(create_app(_services(reranker)), "/v1/rerank", content=content,
                        headers={"content-type": "application/json"}), 422)
    assert error["field"] == "body"
    assert error["message"].startswith(message)


# --- limits ----------------------------------------------------------------------------------------------


def test_limits_answer_413(reranker):
    app = create_app(_services(reranker), Limits(max_documents=3, max_document_chars=30, max_body_bytes=400))
    error = _error(post(app, "/v1/rerank", {"query": "q", "documents": ["a", "b", "c", "d"]}), 413)
    assert error["field"] == "documents" and "limit is 3" in error["message"]
    error = _error(post(app, "/v1/rerank", {"query": "q", "documents": ["short", "x" * 31]}), 413)
    assert error["field"] == "documents[1]"
    assert _error(post(app, "/v1/rerank", {"query": "q" * 31, "documents": ["a"]}), 413)["field"] == "query"
    big = json.dumps({"query": "q", "documents": ["y" * 25] * 3, "pad": "z" * 500}).encode()
    assert _error(post(app, "/v1/rerank", content=big, headers={"content-type": "application/json"}), 413)["field"] == "body"

    async def chunks():  # no Content-Length: the limit is enforced on the bytes received
        for _ in range(10):
            yield b" " * 100

    r = post(app, "/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert _error(r, 413)["field"] == "body"
    assert post(app, "/v1/rerank", {"query": "q", "documents": ["a", "b", "c"]}).status_code == 200


def test_api_key(reranker):
    app = create_app(_services(reranker), api_key="s3cret")
    body = {"query": "q", "documents": ["a"]}
    assert _error(post(app, "/v1/rerank", body), 401)
    assert _error(post(app, "/v1/rerank", body, headers={"Authorization": "Bearer wrong"}), 401)
    assert ask(app, lambda c: c.get("/metrics")).status_code == 401
    assert post(app, "/v1/rerank", body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert post(app, "/v1/rerank", body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert ask(app, lambda c: c.get("/health")).status_code == 200  # for load balancers' probes


def test_missing_service_and_unknown_path_are_json_404(reranker):
    app = create_app(_services(reranker))
    assert "--index" in _error(post(app, "/v1/search", {"query": "q"}), 404)["message"]
    assert "--encoder" in _error(post(app, "/v1/embeddings", {"input": "q"}), 404)["message"]
    assert _error(ask(app, lambda c: c.get("/v2/nothing")), 404)


# --- dynamic batching ------------------------------------------------------------------------------------


def test_batched_requests_score_as_alone(reranker):
    """Requests run in one model call get the scores each gets alone (its batchmates do not matter)."""
    rnd = np.random.default_rng(0)
    from rankwise.testing import corpus_texts

    texts = corpus_texts()
    bodies = [{"query": texts[i][:40], "documents": [texts[j] for j in rnd.choice(400, size=int(n), replace=False)]}
              for i, n in enumerate(rnd.integers(1, 12, size=8))]
    alone = [reranker.score([(b["query"], b["documents"])])[0] for b in bodies]
    app = create_app(_services(reranker), Limits(max_batch_delay_ms=300, max_batch_documents=10_000))
    passes = reranker.stats.forward_passes

    async def together(client):
        return await asyncio.gather(*(client.post("/v1/rerank", json=b) for b in bodies))

    answers = ask(app, together)
    for body, answer, expected in zip(bodies, answers, alone):
        got = {x["index"]: x["relevance_score"] for x in answer.json()["results"]}
        assert [got[i] for i in range(len(body["documents"]))] == pytest.approx(expected, abs=1e-5)
    registry = app.state.metrics.registry
    assert registry.get_sample_value("rankwise_batch_requests_sum", {"service": "rerank"}) == len(bodies)
    calls = registry.get_sample_value("rankwise_batch_requests_count", {"service": "rerank"})
    assert calls < len(bodies)  # some requests shared a model call
    assert reranker.stats.forward_passes - passes < len(bodies)


def _batcher(run, **kw) -> DynamicBatcher:
    import concurrent.futures

    return DynamicBatcher(run, name="t", executor=concurrent.futures.ThreadPoolExecutor(1), metrics=Metrics(), **kw)


def test_batcher_budget_unshared_mode_and_queue_bound():
    calls: list[list[int]] = []

    def run(payloads):
        calls.append(list(payloads))
        return [p * 10 for p in payloads]

    async def main(batcher, sizes):
        return await asyncio.gather(*(batcher.submit(i, size) for i, size in enumerate(sizes)))

    shared = _batcher(run, max_batch=10, max_delay=0.2)
    assert asyncio.run(main(shared, [4, 4, 4, 20, 1])) == [0, 10, 20, 30, 40]
    assert calls == [[0, 1], [2], [3], [4]]  # a request is never split; one over the budget runs alone
    calls.clear()
    isolated = _batcher(run, max_batch=100, max_delay=0.2, shared=False)
    assert asyncio.run(main(isolated, [1, 1, 1])) == [0, 10, 20]
    assert calls == [[0], [1], [2]]  # same worker turn, one model call each

    async def overflow():
        b = _batcher(run, max_batch=100, max_delay=0.5, max_queue=2)
        first = [b.enqueue(0), b.enqueue(1)]
        with pytest.raises(QueueFull):
            b.enqueue(2)
        first[1].cancel()  # a withdrawn request frees its slot at once
        await asyncio.sleep(0)
        third = b.enqueue(3)
        return await asyncio.gather(first[0], third)

    calls.clear()
    assert asyncio.run(overflow()) == [0, 30]
    assert calls == [[0, 3]]  # the withdrawn one never reached the model


def test_int8_models_get_calls_of_their_own(reranker):
    class Int8Like:
        backend = ONNX_INT8

    class LLMLike:
        lm = Int8Like()

    assert batch_invariant(reranker) and not batch_invariant(Int8Like()) and not batch_invariant(LLMLike())
    assert str(server_spec("cross-encoder:m", gpu=False)) == "cross-encoder:m,backend=onnx-int8"
    assert str(server_spec("cross-encoder:m,backend=torch", gpu=False)) == "cross-encoder:m,backend=torch"
    assert str(server_spec("cross-encoder:m", gpu=True)) == "cross-encoder:m"
    assert str(server_spec("listwise:m", gpu=False)) == "listwise:m"


def test_full_queue_answers_503(reranker):
    app = create_app(_services(reranker), Limits(queue_size=1, max_batch_delay_ms=400))
    batcher = app.state.batchers["rerank"]

    async def two(client):
        first = asyncio.create_task(client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]}))
        while batcher.admitted < 1:
            await asyncio.sleep(0.01)
        second = await client.post("/v1/rerank", json={"query": "q", "documents": ["c"]})
        return await first, second

    first, second = ask(app, two)
    assert first.status_code == 200
    error = _error(second, 503)
    assert error["type"] == "queue_full" and second.headers["retry-after"] == "1"


# --- a real server: disconnects and shutdown -------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on a free port in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_client_that_disconnects_frees_its_slot(reranker):
    app = create_app(_services(reranker), Limits(queue_size=1, max_batch_delay_ms=3000))
    batcher = app.state.batchers["rerank"]
    passes = reranker.stats.forward_passes
    with LiveServer(app) as live:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{live.url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=0.5)
        start = time.monotonic()
        _wait(lambda: batcher.admitted == 0)
        assert time.monotonic() - start < 2.0  # freed when the client left, not when the 3 s batch delay ended
        assert app.state.metrics.registry.get_sample_value("rankwise_cancelled_total", {"service": "rerank"}) == 1
        ok = httpx.post(f"{live.url}/v1/rerank", json={"query": "q", "documents": ["b"]}, timeout=30)
        assert ok.status_code == 200
    assert reranker.stats.forward_passes - passes == 1  # the withdrawn request never reached the model


def test_shutdown_drains_in_flight_requests(reranker):
    app = create_app(_services(reranker), Limits(max_batch_delay_ms=1500))
    batcher = app.state.batchers["rerank"]
    answers: list[httpx.Response] = []
    with LiveServer(app) as live:
        client = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{live.url}/v1/rerank", json={"query": "q", "documents": DOCS}, timeout=30)))
        client.start()
        _wait(lambda: batcher.admitted == 1)
        live.server.should_exit = True  # as on SIGTERM, while the request waits for its batch
        client.join(timeout=30)
        live.thread.join(timeout=30)
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["results"]) == len(DOCS)
    assert batcher.closing and batcher.admitted == 0


# --- /v1/search and /v1/embeddings over a dense index ------------------------------------------------------


@pytest.fixture()
def dense_services(tmp_path, synthetic_beir, tiny_encoder):
    from rankwise.rerank.server.services import load_services
    from rankwise.retrieval.encoder import Encoder
    from rankwise.retrieval.formats import Corpus
    from rankwise.retrieval.index import build_dense_index

    build_dense_index(Corpus(synthetic_beir), Encoder(str(tiny_encoder)), tmp_path / "idx", progress=False)
    services = load_services(index=tmp_path / "idx")
    yield services
    services.close()


def test_search_endpoint(dense_services):
    app = create_app(dense_services)
    body = post(app, "/v1/search", {"query": "protein cell gene", "k": 5, "return_documents": True}).json()
    expected = dense_services.retriever.search({"q": "protein cell gene"}, k=5, progress=False)["q"]
    assert body["ids"] == [d for d, _ in expected]
    assert body["scores"] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert body["texts"] == [dense_services.docstore.get(d).full_text for d in body["ids"]]
    plain = post(app, "/v1/search", {"query": "protein cell gene", "k": 3}).json()
    assert plain["ids"] == body["ids"][:3] and "texts" not in plain
    assert _error(post(app, "/v1/search", {"query": "q", "k": 5000}), 422)["field"] == "k"
    assert _error(post(app, "/v1/search", {"query": "q", "k": 0}), 422)["field"] == "k"


def test_embeddings_openai_shape(dense_services):
    app = create_app(dense_services)
    encoder = dense_services.encoder
    body = post(app, "/v1/embeddings", {"input": ["heart blood", "ünïcode ☃"], "model": "x"}).json()
    assert body["object"] == "list" and body["model"] == dense_services.encoder_name
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (2, encoder.dim)
    assert vectors == pytest.approx(encoder.encode_docs(["heart blood", "ünïcode ☃"]), abs=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 2
    one = post(app, "/v1/embeddings", {"input": "heart blood", "encoding_format": "base64", "input_type": "query"}).json()
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    assert decoded == pytest.approx(encoder.encode_queries(["heart blood"])[0], abs=1e-5)
    assert _error(post(app, "/v1/embeddings", {"input": []}), 422)["field"] == "input"
    assert _error(post(app, "/v1/embeddings", {"input": "a", "encoding_format": "int8"}), 422)
    assert _error(post(app, "/v1/embeddings", {"input": "a", "dimensions": encoder.dim + 1}), 422)["field"] == "dimensions"


# --- /health, /metrics, the command ----------------------------------------------------------------------


def test_health_and_metrics(reranker):
    app = create_app(_services(reranker))

    async def traffic(client):
        await client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        await client.post("/v1/rerank", json={"query": "q"})
        return await client.get("/health"), await client.get("/metrics")

    health, metrics = ask(app, traffic)
    assert health.json() == {"status": "ok", "reranker": "tiny-ce", "index": None, "embeddings": None,
                             "queue": {"rerank": 0}, "queue_size": 256}
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'rankwise_requests_total{endpoint="/v1/rerank",status="200"} 1.0' in text
    assert 'rankwise_requests_total{endpoint="/v1/rerank",status="422"} 1.0' in text
    assert 'rankwise_request_duration_seconds_bucket{endpoint="/v1/rerank",le="+Inf"} 2.0' in text
    assert 'rankwise_batch_documents_sum{service="rerank"} 2.0' in text
    assert 'rankwise_queue_depth{service="rerank"} 0.0' in text


def test_serve_command_needs_something_to_serve(capsys):
    from rankwise.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "8080"])  # refused before binding: no --reranker, no --index
    assert exit_info.value.code == 2
    assert "nothing to serve" in capsys.readouterr().err


def test_search_endpoint_over_bm25(tmp_path, synthetic_beir):
    """`--index` naming a BM25 (Lucene) folder: /v1/search answers with Anserini's ranking and the texts."""
    from rankwise.rerank.server.services import load_services
    from rankwise.retrieval.bm25 import build_bm25_index
    from rankwise.retrieval.formats import Corpus

    build_bm25_index(Corpus(synthetic_beir), tmp_path / "bm25", threads=1, progress=False)
    services = load_services(index=tmp_path / "bm25")
    try:
        assert services.encoder is None  # BM25 has no encoder: /v1/embeddings stays off
        app = create_app(services)
        query = "protein cell gene"
        expected = services.retriever.search({"q": query}, k=4, progress=False)["q"]
        assert expected, "the synthetic corpus must match the query"
        body = post(app, "/v1/search", {"query": query, "k": 4, "return_documents": True}).json()
        assert body["ids"] == [d for d, _ in expected]
        assert body["scores"] == pytest.approx([s for _, s in expected], abs=1e-5)
        assert body["scores"] == sorted(body["scores"], reverse=True)
        assert body["texts"] == [services.docstore.get(d).full_text for d in body["ids"]]
        assert _error(post(app, "/v1/embeddings", {"input": ["x"]}), 404)["message"]
    finally:
        services.close()


@pytest.mark.parametrize("headers, reason", [
    ({}, "the Content-Type header is missing"),
    ({"content-type": "text/plain"}, "Content-Type 'text/plain' is not supported"),
    ({"content-type": "application/x-www-form-urlencoded"}, "not supported"),
])
def test_a_body_that_is_not_declared_json_is_415(reranker, headers, reason):
    body = json.dumps({"query": "q", "documents": ["a"]}).encode()
    error = _error(post(create_app(_services(reranker)), "/v1/rerank", content=body, headers=headers), 415)
    assert reason in error["message"] and "application/json" in error["message"]
    assert error["type"] == "unsupported_media_type" and error["field"] == "Content-Type"
    ok = {"content-type": "application/json; charset=utf-8"}
    assert post(create_app(_services(reranker)), "/v1/rerank", content=body, headers=ok).status_code == 200
