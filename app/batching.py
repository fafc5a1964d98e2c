"""Micro-batching: concurrent requests' texts are encoded together, by one encoder worker.

``BatchingEncoder`` wraps any ``encoder.TextEncoder`` and is one itself (``encode(texts, kind)``; every other
attribute is the wrapped encoder's). A call puts its texts in a bounded queue and waits; the worker thread
takes the oldest call, adds the calls of the same kind (query and passage prefixes never share a batch) that
arrive within ``wait_s`` of it, up to ``max_batch_texts`` texts, runs the encoder once and hands each call
its rows. A call with more texts than that is queued in chunks of ``max_batch_texts``, one after the other. Since a text's vector never depends on its batch (the TextEncoder contract), every call gets
exactly the vectors it would have got alone.

One worker is also what keeps threads "set once": only it calls the wrapped encoder, so ONNX Runtime's
intra-op pool (``BABELSEARCH_THREADS``) runs one batch at a time instead of N request threads fighting
over the same cores.

Bounded: at most ``max_pending`` calls wait or run at once; one more raises ``Overloaded`` (429 with
Retry-After) at once. ``admit()`` makes the same check without queueing, for the routes' dependencies on
the event loop, so a request that would be refused is refused before it does any work in the thread pool.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from app.errors import NotReady, Overloaded
from app.limits import env_name

logger = logging.getLogger("babelsearch")

STOP_TIMEOUT_S = 30.0  # stop() waits this long for a running batch; the worker is a daemon thread anyway


class EncoderFailed(RuntimeError):
    """The wrapped encoder raised on the batch this call was in (a server fault: answered 500)."""


class _Stopped(Exception):
    """Set on the calls still queued when the worker stops."""


@dataclass
class _Call:
    texts: list[str]
    kind: str
    submitted: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


class BatchingEncoder:
    """``on_batch(kind, calls, waits_s)`` is told about every batch the encoder ran (telemetry)."""

    def __init__(self, encoder, *, max_pending: int, max_batch_texts: int, wait_s: float,
                 on_batch: Callable[[str, int, list[float]], None] | None = None,
                 pending_setting: str = "max_encoder_requests") -> None:
        self._encoder = encoder
        self.max_pending, self.max_batch_texts, self.wait_s = max_pending, max_batch_texts, wait_s
        self._on_batch, self._pending_setting = on_batch, pending_setting
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_Call]] = {}  # per kind, oldest first
        self._pending = 0  # calls queued or in the running batch, not yet handed their rows
        self._closed = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._work, name="encoder", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Refuse new calls, fail the queued ones (NotReady), let the running batch finish, end the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("the encoder worker is still running a batch after %.0f s", STOP_TIMEOUT_S)
        self._fail_queued()  # never started, or the worker is stuck: no call is left waiting

    @property
    def pending(self) -> int:
        return self._pending

    # --- the TextEncoder side ----------------------------------------------------------------------------

    def admit(self) -> None:
        """Overloaded when a call now would be refused (nothing is reserved: ``encode`` checks again)."""
        with self._cond:
            self._check_room()

    def encode(self, texts: Sequence[str], kind) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, int(self._encoder.dim)), dtype=np.float32)
        # A call with more than one batch of texts (an ingest of 1,000 documents) goes in batch-sized chunks,
        # one after the other, so the searches that arrive meanwhile run between its chunks instead of
        # waiting for all of it. Admitted once: a later chunk is never refused halfway through.
        size = self.max_batch_texts
        chunks = [self._submit(texts[:size], kind, check_room=True)]
        for start in range(size, len(texts), size):
            chunks.append(self._submit(texts[start : start + size], kind, check_room=False))
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _submit(self, texts: list[str], kind, check_room: bool) -> np.ndarray:
        call = _Call(texts, kind)
        with self._cond:
            if check_room:
                self._check_room()
            elif self._closed:
                raise NotReady("the encoder stopped: the service is shutting down")
            self._queues.setdefault(kind, deque()).append(call)
            self._pending += 1
            self._cond.notify()
        # The worker completes every future it takes (rows or the batch's error) and stop() fails the rest,
        # so this wait ends. Each caller raises its own exception: the encoder's is shared, as the cause.
        error = call.future.exception()
        if error is None:
            return call.future.result()
        if isinstance(error, _Stopped):
            raise NotReady("the encoder stopped: the service is shutting down") from None
        raise EncoderFailed(f"the encoder failed on a batch of {kind} texts: {type(error).__name__}: {error}") \
            from error

    def __getattr__(self, name):  # dim, fingerprint, precision, count_tokens, info, ...: the wrapped encoder's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._encoder, name)

    def _check_room(self) -> None:  # under self._cond
        if self._closed:
            raise NotReady("the encoder stopped: the service is shutting down")
        if self._pending >= self.max_pending:
            raise Overloaded(f"overloaded: {self._pending} requests waiting for the encoder or being encoded, "
                             f"at most {self.max_pending} ({env_name(self._pending_setting)}); retry after "
                             f"the Retry-After seconds")

    # --- the worker --------------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(batch)
        except BaseException:  # a bug here must not leave callers waiting: the finally fails them
            logger.exception("the encoder worker stopped")
            with self._cond:
                self._closed = True
            raise
        finally:
            self._fail_queued()

    def _next_batch(self) -> list[_Call] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                heads = [queue[0] for queue in self._queues.values() if queue]
                if heads:
                    break
                self._cond.wait()
            first = min(heads, key=lambda call: call.submitted)
            queue = self._queues[first.kind]
            batch, texts = [queue.popleft()], len(first.texts)
            # Wait for companions until `wait_s` after the first call was submitted: a call that already
            # waited that long (the worker was busy) goes with what is queued, at once.
            deadline = first.submitted + self.wait_s
            while texts < self.max_batch_texts and not self._closed:
                if queue:
                    if texts + len(queue[0].texts) > self.max_batch_texts:
                        break  # it leads the next batch (calls come in chunks of at most max_batch_texts)
                    batch.append(queue.popleft())
                    texts += len(batch[-1].texts)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self, batch: list[_Call]) -> None:
        kind, texts = batch[0].kind, [text for call in batch for text in call.texts]
        started = time.monotonic()
        outcome: np.ndarray | BaseException
        try:
            outcome = np.asarray(self._encoder.encode(texts, kind))
            if outcome.ndim != 2 or outcome.shape[0] != len(texts):
                raise ValueError(f"encoder returned shape {outcome.shape} for {len(texts)} texts")
        except Exception as exc:
            outcome = exc
        try:
            if self._on_batch is not None:
                self._on_batch(kind, len(batch), [started - call.submitted for call in batch])
        except Exception:
            logger.exception("batch telemetry failed")
        with self._cond:  # before the rows are handed over: a caller that has its rows sees itself gone
            self._pending -= len(batch)
        offset = 0
        for call in batch:
            if isinstance(outcome, BaseException):
                call.future.set_exception(outcome)
            else:
                call.future.set_result(outcome[offset : offset + len(call.texts)])
            offset += len(call.texts)

    def _fail_queued(self) -> None:
        with self._cond:
            calls = [call for queue in self._queues.values() for call in queue]
            self._queues.clear()
            self._pending -= len(calls)
        for call in calls:
            call.future.set_exception(_Stopped())
