"""Replicated serving on Ray Serve: ``python -m app.cluster --replicas N [--encoders M] [--threads T]``.

One Serve application, three deployments (``app.cluster.application.build_application``):

- ``SearchReplica`` x N, the HTTP ingress: the service's own FastAPI app (``app.main.create_app``; routes,
  limits, errors and API key unchanged for clients) over a read-only follower of the index
  (``Collection.open_follower``) and a ``RemoteEncoder`` (``app.cluster.replica``).
- ``Encoder`` x M: ``OnnxEncoder`` with T intra-op threads behind ``@serve.batch``, one batched method per
  text kind (``app.cluster.encoder``).
- ``Writer`` x 1: the one process that writes the index; it holds the directory's lock, seeds it at start
  and applies every ingest and delete (``app.cluster.writer``).

Writes. A search replica's write route sends the documents (or ids) to the Writer and answers once the
Writer has committed them (one SQLite transaction). There is no second copy of the index to keep in step:
every replica reads the writer's committed store, catching up before each read (one version check; after
a write, the changed keys are applied from the stored vectors). So the index directory must be one that
every replica can read: one machine, or a shared filesystem mounted at the same path everywhere.

What a client can rely on:

- A write answered 2xx is committed (``synchronous=FULL``: it survives any process dying, and a power cut).
- Every read that starts after that answer, on any replica, sees it: searches, ``GET /documents/{id}``,
  ``/languages``, and the counts in ``/readyz``, ``/metrics`` and the write responses (a replica refreshes
  what it caches, and its query-language detector, before a request when the index changed).
- Reads are not atomic across replicas while a write is in flight: two searches sent during the write
  may see it on one replica and not yet on the other; once it is acknowledged, all see it.
- An answer that is not 2xx, or a dropped connection, says nothing about whether a write happened. Writes
  are upserts by id, so sending the same write again is always safe (a delete sent again after it was
  applied answers 404: the document is gone either way); searches and reads are idempotent.

Failures, and what to retry (docs/scaling.md): when a search replica dies mid-request, the Serve proxy
answers that request ``500`` with a plain-text ``Internal Server Error`` body (the service's own errors are
JSON), and routes later requests to the replicas alive (a request it had not yet sent is sent to another
replica); Serve starts a replacement. A writer that dies mid-write, or does not answer within
``WRITE_TIMEOUT_S``, gives ``503`` with ``Retry-After``, as a writer that is not ready yet does. An encoder
replica that dies mid-call is retried on another by the replica itself. So clients retry on ``500``, on
``503`` (after ``Retry-After``) and on a dropped connection, and on ``429`` after ``Retry-After`` as with a
single process.

Ray is an extra (``pip install .[ray]``): nothing outside this package imports it, so ``python -m app``,
``make serve`` and the image stay free of it.
"""
