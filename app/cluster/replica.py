"""Search replicas: the service's own FastAPI app (``app.main.create_app``, routes unchanged) as the
ingress of a Serve deployment, reading a follower of the Writer's index and sending writes to the Writer.

- ``ReplicaCollection`` is the collection the routes see: reads go to ``Collection.open_follower``, which
  catches up with the writer's last committed transaction before every read; ``add``/``delete`` go to the
  Writer and return once it has committed them.
- ``FollowTheWriter`` (ASGI middleware) keeps what the state caches after a write (document counts, the
  languages the query detector knows) current when the write came through another replica: before each
  request, if the follower caught up with a write, it refreshes them as a single process does after its
  own writes. It also names the replica that answered (``X-Babelsearch-Replica``).
- A replica takes traffic once its state is ready, after the Writer is (index open, seed in): Serve
  routes to it only then, so a replica that starts or restarts never answers 503 "not ready".
"""
from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

import anyio
from ray import serve

from app.cluster.encoder import RemoteEncoder
from app.cluster.writer import WriterClient, wait_for_writer
from app.config import Settings
from app.main import create_app
from app.state import ServiceState, StartupError
from indexes import Collection

logger = logging.getLogger("babelsearch")

REPLICA_HEADER = b"x-babelsearch-replica"
READY_POLL_S = 0.05


class ReplicaCollection:
    """Reads from ``follower``, writes through ``writer`` (a ``WriterClient``); otherwise the follower's
    interface (search, get, languages, statistics, groups, manifest, ...)."""

    def __init__(self, follower: Collection, writer: WriterClient) -> None:
        self._follower, self._writer = follower, writer
        self._seen_statistics = None
        # ServiceState.refresh_counts sets these; the Writer labels documents with its own detector
        self.detector, self.document_languages = None, "served"

    def add(self, documents, skip_unchanged: bool = False) -> dict:
        return self._writer.add(list(documents), skip_unchanged)

    def delete(self, ids) -> int:
        return self._writer.delete(list(ids))

    def caught_up(self) -> bool:
        """Catch up with the writer; True when that applied a write not seen by the last call (a follower
        replaces its statistics object whenever it applies a write)."""
        statistics = self._follower.statistics()
        changed, self._seen_statistics = statistics is not self._seen_statistics, statistics
        return changed

    def __len__(self) -> int:
        return len(self._follower)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._follower, name)


class FollowTheWriter:
    """ASGI middleware: the state's cached counts follow the writer's commits (see the module docstring)."""

    def __init__(self, app, state: ServiceState, replica: str) -> None:
        self.app, self.state = app, state
        self._header = (REPLICA_HEADER, replica.encode())
        self._lock = threading.Lock()  # one refresh at a time; no request passes a refresh in progress

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.collection is not None and scope["path"] != "/livez":
            await anyio.to_thread.run_sync(self._catch_up)  # a thread: catching up reads SQLite, may build shards

        async def send_naming_replica(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._header]}
            await send(message)

        await self.app(scope, receive, send_naming_replica)

    def _catch_up(self) -> None:
        try:
            with self._lock:
                if self.state.collection.caught_up():
                    self.state.refresh_counts()
        except Exception:  # the route's own read fails the same way, with the service's error handling
            logger.exception("catching up with the index writer failed")


@serve.deployment(name="SearchReplica")
@serve.ingress()
class SearchReplica:
    async def __init__(self, settings: Settings, writer, encoder) -> None:
        from app.cluster.process import prepare_process

        prepare_process()
        await wait_for_writer(writer)  # its index exists and the seed is in
        self._encoder = RemoteEncoder(encoder, settings.model_dir, settings.precision, settings.max_encoder_batch)
        self._encoder.check_served(await encoder.describe.remote())
        self._settings, self._writer = settings, WriterClient(writer)

    def __serve_build_asgi_app__(self):
        settings = self._settings.model_copy(update={"seed_collection": None})  # the Writer seeds
        app = create_app(settings, encoder=self._encoder, open_collection=self._open_collection)
        state = app.state.service
        app.add_middleware(FollowTheWriter, state=state, replica=serve.get_replica_context().replica_id.unique_id)
        app.router.lifespan_context = _until_ready(app.router.lifespan_context, state)
        return app

    def _open_collection(self, encoder) -> ReplicaCollection:
        return ReplicaCollection(Collection.open_follower(self._settings.index_dir, encoder), self._writer)


def _until_ready(lifespan, state: ServiceState):
    """``lifespan`` whose startup also waits for the state's background preparation (the warm-up), so that
    Serve starts routing to this replica only when its /readyz would answer 200."""

    @asynccontextmanager
    async def until_ready(app):
        async with lifespan(app) as value:
            while not state.ready:
                if "failed" in state.reason:
                    raise StartupError(f"search replica: {state.reason}")
                await asyncio.sleep(READY_POLL_S)
            yield value

    return until_ready
