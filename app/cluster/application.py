"""The Serve application: ``replicas`` search replicas (the HTTP ingress), ``encoders`` encoder replicas of
``threads`` ONNX Runtime threads each, and one writer; ``build_application`` binds them, ``ray_session``
connects to the cluster that runs them (``python -m app.cluster``, bench/bench_ray_serve.py)."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app.cluster.encoder import Encoder
from app.cluster.process import LOG_LEVEL_VARIABLE
from app.cluster.replica import SearchReplica
from app.cluster.writer import Writer
from app.config import Settings

APP_NAME = "babelsearch"
WRITER_MAX_ONGOING = 16  # concurrent writes (exclusive in the collection, encoded concurrently) and status calls
ENCODER_MAX_ONGOING = 64  # calls queued for @serve.batch: every replica's and the writer's batches


def absolute(settings: Settings) -> Settings:
    """Paths resolved here, once: replicas run in other processes (other nodes: a shared filesystem)."""
    paths = {name: Path(value).resolve() for name in ("model_dir", "index_dir", "seed_collection")
             if (value := getattr(settings, name)) is not None}
    return settings.model_copy(update=paths)


def build_application(settings: Settings, replicas: int = 1, encoders: int = 1, threads: int = 1,
                      log_level: str = "info"):
    """The application ``serve.run`` deploys. Replicas reserve no Ray CPUs (``num_cpus=0``): size
    ``replicas``, ``encoders`` and ``threads`` to the cores; every search replica runs FAISS with one
    OpenMP thread per request thread (OMP_NUM_THREADS: 1 unless set, as ``python -m app``)."""
    if min(replicas, encoders) < 1 or threads < 0:
        raise ValueError(f"need at least one search and one encoder replica and threads >= 0, got "
                         f"replicas={replicas}, encoders={encoders}, threads={threads}")
    settings = absolute(settings).model_copy(update={"threads": threads})  # what /info and the logs report
    process = {"ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": {
                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), LOG_LEVEL_VARIABLE: log_level}}},
               "logging_config": {"enable_access_log": False}}
    encoder = Encoder.options(num_replicas=encoders, max_ongoing_requests=ENCODER_MAX_ONGOING, **process).bind(
        str(settings.model_dir), settings.precision, threads, settings.max_encoder_batch)
    writer = Writer.options(max_ongoing_requests=WRITER_MAX_ONGOING, **process).bind(settings, encoder)
    # Room for every request the replica's own encoder queue admits (its 429 stays the overload answer),
    # and as many again for the routes that do not encode (/readyz, /metrics, GET /documents, ...).
    return SearchReplica.options(num_replicas=replicas, max_ongoing_requests=2 * settings.max_encoder_requests,
                                 **process).bind(settings, writer, encoder)


def from_args(args: dict[str, str]):
    """An application builder, for ``serve run app.cluster.application:from_args replicas=2 threads=1`` and for
    KubeRay's RayService (``serveConfigV2``: ``import_path: app.cluster.application:from_args``, ``args``);
    the other settings come from the ``BABELSEARCH_*`` environment, as for ``python -m app.cluster``."""
    known = {"replicas", "encoders", "threads", "log_level"}
    if set(args) - known:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(set(args) - known))}; known: {', '.join(sorted(known))}")
    replicas = int(args.get("replicas", 1))
    return build_application(Settings(), replicas, int(args.get("encoders", replicas)), int(args.get("threads", 1)),
                             args.get("log_level", "info"))


@contextmanager
def ray_session(address: str | None, log_to_driver: bool = True) -> Iterator[None]:
    """``indexes.ray_session.ray_session`` for serving: the replicas' output (their errors among it) printed
    here too (``log_to_driver``), and Ray's own warnings."""
    from indexes.ray_session import ray_session as session

    with session(address, log_to_driver=log_to_driver, logging_level=logging.WARNING):
        yield
