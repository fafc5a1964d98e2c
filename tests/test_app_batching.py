"""Micro-batching (app.batching, issue 16): concurrent encode calls share encoder calls and get exactly the
vectors they would get alone; kinds never share a batch; the batch and the queue are bounded (a full queue is
answered 429 with Retry-After); an encoder error fails only its batch; shutdown stops the worker.

No timing assertions: the worker is held inside the encoder (an Event) while calls queue, so what each batch
holds is decided before it is released."""
from __future__ import annotations

import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.batching import BatchingEncoder, EncoderFailed
from app.errors import NotReady, Overloaded
from tests.app_fixtures import GRID_LANGUAGES, GRID_TOPICS, GridEncoder, make_settings, running_server, wait_ready, \
    wait_until, write_jsonl


class HeldEncoder:
    """Vectors from (kind, text) alone; records every call. ``hold()``: the next call waits for ``release``."""

    precision, dim, fingerprint = "fp32", 8, "held"

    def __init__(self, fail_on: str | None = None, rows: int | None = None):
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_on, self.rows = fail_on, rows
        self._hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def hold(self) -> None:
        self._hold.set()

    def encode(self, texts, kind):
        self.calls.append((kind, list(texts)))
        if self._hold.is_set():
            self._hold.clear()
            self.entered.set()
            assert self.release.wait(60), "never released"
        if self.fail_on in texts:
            raise RuntimeError("boom")
        vectors = np.stack([self.vector(text, kind) for text in texts])
        return vectors[: self.rows] if self.rows is not None else vectors

    def vector(self, text: str, kind: str) -> np.ndarray:
        v = np.random.default_rng(zlib.crc32(f"{kind}:{text}".encode())).standard_normal(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)


def batcher_over(inner, **overrides) -> BatchingEncoder:
    values = dict(max_pending=64, max_batch_texts=64, wait_s=0.002)
    values.update(overrides)
    batcher = BatchingEncoder(inner, **values)
    batcher.start()
    return batcher


def held_worker(batcher, inner, pool):
    """A first call that keeps the worker inside the encoder until ``inner.release`` is set."""
    inner.hold()
    first = pool.submit(batcher.encode, ["first"], "query")
    assert inner.entered.wait(30)
    return first


def queue_in_order(batcher, pool, calls):
    """Futures of ``calls`` ((texts, kind) pairs), each queued only once the one before it is."""
    futures = []
    for texts, kind in calls:
        expected = batcher.pending + 1
        futures.append(pool.submit(batcher.encode, texts, kind))
        wait_until(lambda: batcher.pending == expected)
    return futures


def test_concurrent_calls_share_one_encoder_call_and_get_their_own_vectors():
    inner = HeldEncoder()
    batcher = batcher_over(inner)
    calls = [[f"text {i}.{j}" for j in range(1 + i % 3)] for i in range(12)]
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        first = held_worker(batcher, inner, pool)
        futures = queue_in_order(batcher, pool, [(texts, "query") for texts in calls])
        inner.release.set()
        results = [future.result(30) for future in futures]
        first.result(30)
    batcher.stop()
    assert len(inner.calls) == 2 < len(calls) + 1  # the held call, then the 12 queued ones together
    assert inner.calls[1] == ("query", [text for texts in calls for text in texts])
    reference = HeldEncoder()
    for texts, vectors in zip(calls, results):
        one_by_one = np.stack([reference.encode([text], "query")[0] for text in texts])
        assert vectors.dtype == np.float32 and np.array_equal(vectors, one_by_one)


def test_queries_and_passages_never_share_a_batch():
    inner = HeldEncoder()
    batcher = batcher_over(inner)
    calls = [(["same text", f"t{i}"], "query" if i % 2 else "passage") for i in range(8)]
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        held_worker(batcher, inner, pool)
        futures = queue_in_order(batcher, pool, calls)
        inner.release.set()
        results = [future.result(30) for future in futures]
    batcher.stop()
    # The oldest queued call (a passage) leads; every call of its kind joins; then the queries.
    assert inner.calls[1:] == [(kind, [t for texts, k in calls if k == kind for t in texts])
                               for kind in ("passage", "query")]
    reference = HeldEncoder()
    for (texts, kind), vectors in zip(calls, results):
        assert np.array_equal(vectors, reference.encode(texts, kind))
    assert not np.array_equal(results[0][0], results[1][0])  # "same text": its query and passage vectors differ


def test_a_batch_holds_at_most_max_batch_texts_and_a_longer_call_goes_in_chunks():
    inner = HeldEncoder()
    batcher = batcher_over(inner, max_batch_texts=4)
    sizes = [1, 1, 1, 1, 1, 6, 1]
    calls = [[f"c{i}.{j}" for j in range(size)] for i, size in enumerate(sizes)]
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        held_worker(batcher, inner, pool)
        futures = queue_in_order(batcher, pool, [(texts, "query") for texts in calls])
        inner.release.set()
        results = [future.result(30) for future in futures]
    batcher.stop()
    # four singles fill a batch; the fifth cannot take the 6-text call's first chunk (4) with it; its second
    # chunk (2) is queued once the first is done, behind or beside the last single
    batches = [texts for _, texts in inner.calls[1:]]
    assert [len(texts) for texts in batches[:3]] == [4, 1, 4]
    assert batches[2] == calls[5][:4] and all(len(texts) <= 4 for texts in batches)
    assert sorted(text for texts in batches[3:] for text in texts) == sorted(calls[5][4:] + calls[6])
    assert [len(vectors) for vectors in results] == sizes
    reference = HeldEncoder()
    assert all(np.array_equal(vectors, reference.encode(texts, "query")) for texts, vectors in zip(calls, results))


def test_a_full_queue_refuses_at_once_and_recovers():
    inner = HeldEncoder()
    batcher = batcher_over(inner, max_pending=2)
    with ThreadPoolExecutor(2) as pool:
        first = held_worker(batcher, inner, pool)
        queued = pool.submit(batcher.encode, ["queued"], "query")
        wait_until(lambda: batcher.pending == 2)
        with pytest.raises(Overloaded, match=r"at most 2 \(BABELSEARCH_MAX_ENCODER_REQUESTS\)"):
            batcher.encode(["one more"], "query")
        with pytest.raises(Overloaded):
            batcher.admit()
        inner.release.set()
        first.result(30), queued.result(30)
    assert batcher.pending == 0 and batcher.encode(["now"], "query").shape == (1, 8)
    batcher.stop()


@pytest.mark.parametrize("inner", [HeldEncoder(fail_on="bad"), HeldEncoder(rows=1)], ids=["raises", "wrong-rows"])
def test_an_encoder_error_fails_that_batch_only_and_the_worker_goes_on(inner):
    batcher = batcher_over(inner)
    with ThreadPoolExecutor(4) as pool:
        held_worker(batcher, inner, pool)
        *same_batch, other_kind = queue_in_order(batcher, pool, [(["ok"], "query"), (["bad", "x"], "query"),
                                                                 (["ok"], "passage")])
        inner.release.set()
        for future in same_batch:
            with pytest.raises(EncoderFailed, match="the encoder failed on a batch of query texts"):
                future.result(30)
        if inner.rows is None:  # the passage batch has one text: a one-row encoder is right for it
            assert other_kind.result(30).shape == (1, 8)
    assert batcher.pending == 0
    assert batcher.encode(["ok"], "passage").shape == (1, 8)
    batcher.stop()


def test_stop_lets_the_running_batch_finish_fails_the_queued_ones_and_ends_the_worker():
    inner = HeldEncoder()
    batcher = batcher_over(inner)
    worker = batcher._thread
    with ThreadPoolExecutor(3) as pool:
        first = held_worker(batcher, inner, pool)
        queued = pool.submit(batcher.encode, ["queued"], "query")
        wait_until(lambda: batcher.pending == 2)
        stopping = pool.submit(batcher.stop)

        def refusing() -> bool:
            try:
                batcher.admit()
            except NotReady:
                return True
            return False

        wait_until(refusing)
        inner.release.set()
        stopping.result(30)
        assert first.result(30).shape == (1, 8)
        with pytest.raises(NotReady, match="shutting down"):
            queued.result(30)
    assert not worker.is_alive() and batcher.pending == 0
    with pytest.raises(NotReady):
        batcher.encode(["late"], "query")


def test_no_texts_no_queue():
    inner = HeldEncoder()
    batcher = batcher_over(inner)
    assert batcher.encode([], "query").shape == (0, 8) and inner.calls == []
    assert batcher.dim == 8 and batcher.fingerprint == "held"  # the wrapped encoder's attributes
    batcher.stop()


# --- through the HTTP API -------------------------------------------------------------------------------


class HeldGridEncoder(GridEncoder):
    """GridEncoder (the grid app's texts) whose query calls are recorded, and held on ``hold()``."""

    def __init__(self):
        super().__init__(GRID_TOPICS, GRID_LANGUAGES)
        self.query_calls: list[list[str]] = []
        self._hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()
        self.fail = False

    def hold(self) -> None:
        self.entered.clear(), self.release.clear(), self._hold.set()

    def encode(self, texts, kind, *args, **kwargs):
        if kind == "query":
            self.query_calls.append(list(texts))
            if self._hold.is_set():
                self._hold.clear()
                self.entered.set()
                assert self.release.wait(60), "never released"
            if self.fail:
                raise RuntimeError("boom")
        return super().encode(texts, kind, *args, **kwargs)


def held_app(tmp_path, **overrides):
    from app.main import create_app

    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in GRID_TOPICS for lang in GRID_LANGUAGES]
    encoder = HeldGridEncoder()
    settings = make_settings(tmp_path, tmp_path / "unused", write_jsonl(tmp_path / "seed.jsonl", rows), **overrides)
    return create_app(settings, encoder=encoder), encoder


QUERIES = [f"{t} {lang}" for t in GRID_TOPICS for lang in GRID_LANGUAGES]


def without_timing(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "timing_ms"}


def test_concurrent_requests_are_encoded_together_with_the_answers_they_get_alone(tmp_path):
    app, encoder = held_app(tmp_path)
    requests = [("/search", {"query": q, "query_language": q.split()[1], "k": 3}) for q in QUERIES] + \
               [("/v1/embeddings", {"input": [q, QUERIES[0]], "input_type": "query"}) for q in QUERIES]
    with TestClient(app) as client, ThreadPoolExecutor(len(requests) + 1) as pool:
        wait_ready(client)
        queue = app.state.service.encoder
        alone = [client.post(path, json=body).json() for path, body in requests]
        assert len(encoder.query_calls) == len(requests)

        encoder.query_calls.clear(), encoder.hold()
        first = pool.submit(client.post, "/v1/embeddings", json={"input": "A de", "input_type": "query"})
        assert encoder.entered.wait(30)
        futures = [pool.submit(client.post, path, json=body) for path, body in requests]
        wait_until(lambda: queue.pending == len(requests) + 1)
        encoder.release.set()
        together = [future.result(30) for future in futures]
        assert first.result(30).status_code == 200
        metrics = client.get("/metrics").text
    assert [response.status_code for response in together] == [200] * len(requests)
    # the held request, then all the others (18 texts, within max_encoder_batch) in one encoder call
    assert [len(texts) for texts in encoder.query_calls] == [1, 18]
    for (path, _), before, after in zip(requests, alone, together):
        if path == "/search":
            assert without_timing(after.json()) == without_timing(before)
        else:
            assert after.json() == before
    assert 'babelsearch_encode_batch_requests_count{kind="query"}' in metrics
    assert 'babelsearch_encode_queue_wait_seconds_count{kind="query"}' in metrics
    assert 'babelsearch_encode_batch_requests_count{kind="passage"}' in metrics  # the seed went through it too


def test_a_full_encoder_queue_is_answered_429_with_retry_after(tmp_path):
    app, encoder = held_app(tmp_path, max_encoder_requests=1)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        wait_ready(client)
        info = client.get("/info").json()["limits"]
        assert info["max_encoder_requests"]["value"] == 1
        assert {"max_encoder_batch", "encoder_batch_wait_ms"} <= set(info)
        encoder.hold()
        held = pool.submit(client.post, "/search", json={"query": "A de", "query_language": "de"})
        assert encoder.entered.wait(30)
        search = client.post("/search", json={"query": "B en", "query_language": "en"})
        embeddings = client.post("/v1/embeddings", json={"input": "B en", "input_type": "query"})
        assert "babelsearch_encoder_pending 1.0" in client.get("/metrics").text
        encoder.release.set()
        assert held.result(30).status_code == 200
        assert client.post("/search", json={"query": "B en", "query_language": "en"}).status_code == 200
    assert search.status_code == 429 and search.headers["Retry-After"] == "1"
    assert "at most 1 (BABELSEARCH_MAX_ENCODER_REQUESTS)" in search.json()["detail"]
    assert embeddings.status_code == 429 and embeddings.headers["Retry-After"] == "1"
    assert embeddings.json()["error"]["code"] == "overloaded"


def test_an_encoder_failure_is_a_500_for_its_requests_and_none_hangs(tmp_path):
    app, encoder = held_app(tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client, ThreadPoolExecutor(3) as pool:
        wait_ready(client)
        queue = app.state.service.encoder
        encoder.fail = True
        encoder.hold()
        futures = [pool.submit(client.post, "/v1/embeddings", json={"input": text, "input_type": "query"})
                   for text in ("A de", "B en")]
        futures.append(pool.submit(client.post, "/search", json={"query": "A ja", "query_language": "ja"}))
        wait_until(lambda: queue.pending == 3)
        encoder.release.set()
        failed = [future.result(30) for future in futures]
        encoder.fail = False
        assert client.post("/search", json={"query": "A ja", "query_language": "ja"}).status_code == 200
    assert [response.status_code for response in failed] == [500] * 3
    assert failed[0].json()["error"] == {"message": "internal error: EncoderFailed", "type": "server_error",
                                         "param": None, "code": "internal_error"}
    assert failed[2].json() == {"detail": "internal error: EncoderFailed"}


def test_a_client_that_went_away_does_not_hold_the_worker(tmp_path):
    app, encoder = held_app(tmp_path)
    with running_server(app, limit_s=90) as base:
        queue = app.state.service.encoder
        encoder.hold()
        with pytest.raises(httpx.TimeoutException):  # the client gives up while its query is held
            httpx.post(f"{base}/search", json={"query": "A de", "query_language": "de"}, timeout=0.5)
        wait_until(lambda: queue.pending == 1)
        encoder.release.set()
        wait_until(lambda: queue.pending == 0)
        response = httpx.post(f"{base}/search", json={"query": "B en", "query_language": "en"}, timeout=30)
        assert response.status_code == 200


def test_shutdown_stops_the_encoder_worker(tmp_path):
    app, _ = held_app(tmp_path)
    with TestClient(app) as client:
        wait_ready(client)
        queue = app.state.service.encoder
        worker = queue._thread
        assert worker.is_alive() and worker.name == "encoder"
    assert not worker.is_alive()
    with pytest.raises(NotReady):
        queue.encode(["A de"], "query")
