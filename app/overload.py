"""Admission: a bounded number of requests doing expensive work at once; the next one is answered 429 with
``Retry-After`` at once instead of waiting in a queue that only grows under overload.

Audits use it (``max_concurrent_audits``): each ranks the whole collection, work the encoder's queue does not
see. Encoder work itself is bounded by that queue (``app.batching``, ``max_encoder_requests``)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from app.errors import Overloaded
from app.limits import env_name


class Gate:
    """At most ``limit`` requests inside at once; one more is answered 429 at once instead of queueing."""

    def __init__(self, what: str, limit: int, setting: str) -> None:
        self.what, self.limit, self.setting = what, limit, setting
        self.active = 0
        self._lock = threading.Lock()

    @contextmanager
    def enter(self):
        with self._lock:
            if self.active >= self.limit:
                raise Overloaded(f"overloaded: {self.active} {self.what} in progress, at most {self.limit} "
                                 f"({env_name(self.setting)}); retry after the Retry-After seconds")
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
