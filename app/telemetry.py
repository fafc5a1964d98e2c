"""Prometheus metrics. Each app gets its own registry (several apps can live in one test process)."""
from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from encoder.calibration import METHODS as CALIBRATION_METHODS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # the batch wait is ms
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Label values stay a bounded set: any other method is "other", a path no route matches is "unmatched".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "babelsearch_requests", "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "babelsearch_request_duration_seconds", "HTTP request latency by endpoint and status",
            ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.encode = Histogram(
            "babelsearch_encode_duration_seconds", "time spent in the encoder per call",
            ["kind"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.encoded_texts = Counter(
            "babelsearch_encoded_texts", "texts embedded by the encoder", ["kind"], registry=self.registry)
        # app.batching: how many requests each encoder call served, how long they queued for it, and how
        # many are queued or being encoded now (the bound BABELSEARCH_MAX_ENCODER_REQUESTS applies to).
        self.batch_requests = Histogram(
            "babelsearch_encode_batch_requests", "requests whose texts one encoder call embedded",
            ["kind"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram(
            "babelsearch_encode_queue_wait_seconds", "time a request waited for its encoder batch to start",
            ["kind"], buckets=WAIT_BUCKETS, registry=self.registry)
        self.encoder_pending = Gauge(
            "babelsearch_encoder_pending", "requests queued for the encoder or in its running batch",
            registry=self.registry)
        self.documents = Gauge(
            "babelsearch_documents", "documents in the collection per language", ["language"], registry=self.registry)
        self.ready = Gauge("babelsearch_ready", "1 when model and index are loaded", registry=self.registry)
        # by the method that actually ranked (after any fallback): a bounded label set
        self.searches = Counter("babelsearch_searches", "searches by the calibration method that ranked them",
                                ["method"], registry=self.registry)
        for method in CALIBRATION_METHODS:
            self.searches.labels(method=method)
        # process_resident_memory_bytes & co.: the serving footprint, readable through the published port
        ProcessCollector(registry=self.registry)

    def set_documents(self, languages: dict) -> None:
        self.documents.clear()
        for language, count in languages.items():
            self.documents.labels(language=language or "und").set(count)

    def observe_batch(self, kind: str, requests: int, waits: list[float]) -> None:
        self.batch_requests.labels(kind=kind).observe(requests)
        histogram = self.queue_wait.labels(kind=kind)
        for wait in waits:
            histogram.observe(wait)

    def export(self) -> bytes:
        return generate_latest(self.registry)


class TelemetryMiddleware:
    """Counts every request under its route template (``/documents/{doc_id}``, not the raw path) and a
    known method (else "other")."""

    def __init__(self, app, telemetry: Telemetry) -> None:
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            # "/documents/{doc_id:path}" -> "/documents/{doc_id}": the template, never the raw id
            endpoint = re.sub(r":\w+}", "}", getattr(route, "path", None) or "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = dict(endpoint=endpoint, method=method, status=str(status[0]))
            self.telemetry.requests.labels(**labels).inc()
            self.telemetry.latency.labels(**labels).observe(time.perf_counter() - start)


class TimedEncoder:
    """The encoder as the batching worker calls it: same interface, every ``encode`` call (one batch) timed."""

    def __init__(self, encoder, telemetry: Telemetry) -> None:
        self._encoder, self._telemetry = encoder, telemetry

    def encode(self, texts, kind, *args, **kwargs):
        start = time.perf_counter()
        vectors = self._encoder.encode(texts, kind, *args, **kwargs)
        self._telemetry.encode.labels(kind=kind).observe(time.perf_counter() - start)
        self._telemetry.encoded_texts.labels(kind=kind).inc(len(texts))
        return vectors

    def __getattr__(self, name):
        return getattr(self._encoder, name)
