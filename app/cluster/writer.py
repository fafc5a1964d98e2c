"""The one writer: the ``Writer`` deployment owns the index directory; ``WriterClient`` is how a search
replica's write routes reach it.

The Writer runs the service's own ``ServiceState`` without HTTP: it opens the index with
``Collection.open`` (holding the directory's lock, so there is never a second writer), seeds it at start
(the same marker, chunks and skip-unchanged as ``python -m app``), labels documents sent without a language
with the same detector, and encodes passages through the ``Encoder`` deployment. A write returns once its
SQLite transaction is committed; followers (the search replicas) read that transaction before their next
read. Once the seed is in, it writes the shard files, so replicas that start later (or restart) load them
instead of rebuilding every shard from the stored vectors.

Outcomes cross the process boundary as ``(result, error)``: the error is the exception the replica's
route raises (``ValueError`` for an invalid document, ``Overloaded`` or ``NotReady``), never a Ray
traceback in a client's message.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from ray import serve
from ray.exceptions import RayActorError

from app.cluster.encoder import RemoteEncoder
from app.config import Settings
from app.errors import NotReady, Overloaded
from app.state import ServiceState
from app.telemetry import Telemetry
from indexes import Collection, Document

logger = logging.getLogger("babelsearch")

WRITE_TIMEOUT_S = 300.0  # a replica waits this long for a write (a restarting writer, a large ingest); then 503
READY_POLL_S = 0.2

Outcome = tuple[object, Exception | None]  # (result, the exception to raise instead)


@serve.deployment(name="Writer", num_replicas=1)
class Writer:
    async def __init__(self, settings: Settings, encoder) -> None:
        from app.cluster.process import prepare_process

        prepare_process()
        client = RemoteEncoder(encoder, settings.model_dir, settings.precision, settings.max_encoder_batch)
        client.check_served(await encoder.describe.remote())
        self._state = ServiceState(settings, Telemetry(), encoder=client)
        self._state.start()  # opens the index (StartupError: the replica fails to start, with the reason)
        threading.Thread(target=self._checkpoint_once_ready, name="checkpoint", daemon=True).start()

    def status(self) -> dict:
        state = self._state
        return {"ready": state.ready, "failed": not state.ready and "failed" in state.reason,
                "reason": state.reason, "documents": state.documents, "model": state.model_name}

    async def add(self, documents: list[Document], skip_unchanged: bool = False) -> Outcome:
        return await asyncio.to_thread(self._write, lambda c: c.add(documents, skip_unchanged=skip_unchanged))

    async def delete(self, ids: list[str]) -> Outcome:
        return await asyncio.to_thread(self._write, lambda c: c.delete(ids))

    def _write(self, write: Callable[[Collection], object]) -> Outcome:
        state = self._state
        if not state.ready:
            return None, NotReady(f"the index writer is not ready: {state.reason}")
        try:
            return write(state.collection), None
        except (ValueError, Overloaded, NotReady) as exc:  # nothing was written
            return None, exc
        finally:
            state.refresh_counts()

    def _checkpoint_once_ready(self) -> None:
        state = self._state
        while not state.ready:
            if "failed" in state.reason or state.reason == "shut down":
                return
            time.sleep(READY_POLL_S)
        try:
            state.collection.checkpoint()
        except Exception:  # only a faster start for the replicas; they rebuild from the store without it
            logger.exception("writing the shard files after the seed failed")

    def __del__(self) -> None:  # Serve calls it when the replica shuts down: shard files written, lock released
        state = getattr(self, "_state", None)
        if state is not None:
            state.stop()


class WriterClient:
    """The Writer, as a search replica's collection adapter calls it (from a route's thread: it blocks)."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def add(self, documents: list[Document], skip_unchanged: bool = False) -> dict:
        return self._call(self._handle.add, documents, skip_unchanged)

    def delete(self, ids: list[str]) -> int:
        return self._call(self._handle.delete, ids)

    def _call(self, method, *args):
        try:
            result, error = method.remote(*args).result(timeout_s=WRITE_TIMEOUT_S)
        except RayActorError as exc:
            raise NotReady("the index writer stopped during this write, which may or may not have been committed: "
                           "send it again (writes are upserts by id)") from exc
        except TimeoutError as exc:
            raise NotReady(f"the index writer did not answer within {WRITE_TIMEOUT_S:.0f} s (restarting?); the "
                           "write may or may not have been committed: send it again") from exc
        if error is not None:
            raise error
        return result


async def wait_for_writer(handle) -> dict:
    """Until the Writer is ready (its index exists and the seed is in); its status. Raises if it failed."""
    while True:
        status = await handle.status.remote()
        if status["ready"]:
            return status
        if status["failed"]:
            raise RuntimeError(f"the index writer failed: {status['reason']}")
        await asyncio.sleep(READY_POLL_S)
