"""Overload is answered, not queued (issue 12): a bounded number of requests wait for or are in the encoder
(app.batching), the next gets 429 with Retry-After; health, readiness, metrics and /info never wait for the encoder; metric labels stay bounded;
methods are answered with Allow."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.app_fixtures import GRID_LANGUAGES, GRID_TOPICS, GridEncoder, make_settings, running_server, wait_ready, \
    wait_until, write_jsonl

KEY = "overload-key"


class BlockingEncoder(GridEncoder):
    """Query encoding waits until ``release`` is set (passages, i.e. the seed, go through)."""

    def __init__(self):
        super().__init__(GRID_TOPICS, GRID_LANGUAGES)
        self.release = threading.Event()

    def encode(self, texts, kind, *args, **kwargs):
        if kind == "query":
            assert self.release.wait(60), "never released"
        return super().encode(texts, kind, *args, **kwargs)


def blocking_app(tmp_path, **overrides):
    from app.main import create_app

    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in GRID_TOPICS for lang in GRID_LANGUAGES]
    encoder = BlockingEncoder()
    settings = make_settings(tmp_path, tmp_path / "unused", write_jsonl(tmp_path / "seed.jsonl", rows), api_key=KEY,
                             **overrides)
    return create_app(settings, encoder=encoder), encoder


SEARCH = {"query": "A de", "query_language": "de", "k": 2}


def test_encoder_work_over_the_limit_is_answered_429_with_retry_after(tmp_path):
    app, encoder = blocking_app(tmp_path, max_encoder_requests=2)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        wait_ready(client)
        queue = app.state.service.encoder
        held = [pool.submit(client.post, "/search", json=SEARCH) for _ in range(2)]
        wait_until(lambda: queue.pending == 2)
        refused = {
            "search": client.post("/search", json=SEARCH),
            "embeddings": client.post("/v1/embeddings", json={"input": "A de"}),
            "documents": client.post("/documents", json=[{"id": "n", "text": "A de", "language": "de"}],
                                     headers={"X-API-Key": KEY}),
            "audit": client.post("/audit"),
        }
        for name, response in refused.items():
            assert response.status_code == 429 and response.headers["Retry-After"] == "1", (name, response.text)
        assert "at most 2 (BABELSEARCH_MAX_ENCODER_REQUESTS)" in refused["search"].json()["detail"]
        error = refused["embeddings"].json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "overloaded"
        encoder.release.set()
        assert [future.result().status_code for future in held] == [200, 200]
        assert queue.pending == 0 and client.post("/search", json=SEARCH).status_code == 200


def test_one_audit_at_a_time(tmp_path):
    app, encoder = blocking_app(tmp_path)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        wait_ready(client)
        first = pool.submit(client.post, "/audit")
        wait_until(lambda: app.state.service.audit_gate.active == 1)
        second = client.post("/audit")
        assert second.status_code == 429 and "BABELSEARCH_MAX_CONCURRENT_AUDITS" in second.json()["detail"]
        assert client.get("/livez").status_code == 200
        encoder.release.set()
        assert first.result().status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/info", "/"])
def test_health_metrics_and_info_answer_while_the_thread_pool_is_saturated(tmp_path, path):
    """50 searches wait for the encoder (more than the 40 threads of the pool): these still answer at once."""
    app, encoder = blocking_app(tmp_path, max_encoder_requests=100)
    with running_server(app, limit_s=90) as base, ThreadPoolExecutor(50) as pool:
        queue = app.state.service.encoder
        held = [pool.submit(httpx.post, f"{base}/search", json=SEARCH, timeout=60) for _ in range(50)]
        try:
            wait_until(lambda: queue.pending == 40)  # every thread of anyio's pool (40) waits in the encoder
            start = time.perf_counter()
            response = httpx.get(f"{base}{path}", timeout=10)
            elapsed = time.perf_counter() - start
        finally:
            encoder.release.set()
        assert response.status_code == 200 and elapsed < 1.0, (response.status_code, elapsed)
        assert {future.result().status_code for future in held} == {200}


def test_readyz_and_encoder_routes_say_not_ready_with_retry_after():
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings.model_construct())  # lifespan not run: nothing loaded
    client = TestClient(app)
    assert client.get("/readyz").status_code == 503 and client.get("/readyz").headers["Retry-After"] == "5"
    search = client.post("/search", json={"query": "x"})
    assert search.status_code == 503 and search.headers["Retry-After"] == "5"
    embeddings = client.post("/v1/embeddings", json={"input": "x"})
    assert embeddings.status_code == 503 and embeddings.json()["error"]["code"] == "not_ready"
    assert client.get("/livez").status_code == 200 and client.get("/info").json()["ready"] is False


def test_metric_labels_stay_bounded(tmp_path):
    from tests.app_fixtures import grid_app

    with TestClient(grid_app(tmp_path)) as client:
        wait_ready(client)
        for i in range(50):
            client.request(f"M{i}X", "/search")
            client.get(f"/no/such/path/{i}")
            client.request("BREW", f"/coffee/{i}")
        text = client.get("/metrics").text
    request_lines = [line for line in text.splitlines() if line.startswith("babelsearch_requests_total{")]
    assert 'endpoint="/search",method="other",status="405"' in text
    assert 'endpoint="unmatched",method="GET",status="404"' in text
    assert 'endpoint="unmatched",method="other",status="404"' in text
    assert not any("M1X" in line or "/no/such" in line or "BREW" in line for line in request_lines)
    assert len(request_lines) < 10, request_lines


def test_options_and_wrong_methods_are_answered_with_allow(tmp_path):
    from tests.app_fixtures import grid_app

    with TestClient(grid_app(tmp_path)) as client:
        wait_ready(client)
        options = client.options("/documents/some/id")
        assert options.status_code == 204 and options.headers["Allow"] == "DELETE, GET, OPTIONS"
        assert client.options("/search").headers["Allow"] == "OPTIONS, POST"
        assert client.options("/static/docs/redoc/LICENSE").headers["Allow"] == "GET, HEAD, OPTIONS"
        assert client.options("/nowhere").status_code == 404
        wrong = client.put("/search", json={})
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "OPTIONS, POST"
        assert wrong.json() == {"detail": "method PUT not allowed on /search; allowed: OPTIONS, POST"}
        on_v1 = client.get("/v1/embeddings")
        assert on_v1.status_code == 405 and on_v1.json()["error"]["code"] == "method_not_allowed"
        assert client.patch("/documents/x").headers["Allow"] == "DELETE, GET, OPTIONS"
