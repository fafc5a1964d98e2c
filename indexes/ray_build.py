"""Distributed passage encoding for ``python -m indexes build --ray``: Ray Data over an actor pool of ONNX encoders.

    python -m indexes build --ray [--address HOST:PORT] [--actors 2] [--threads-per-actor 1] \\
                            --model ARTIFACT_DIR --input docs.jsonl|docs.parquet --out INDEX_DIR

The CLI's process (the driver) reads and checks the documents, opens the collection and holds its lock: it stays
the single writer. It hands the documents still to embed to ``encode_with_ray``, which sorts them by length
(batches of like lengths pad less, as in a local build; longest first), ships ``{row, text}`` to Ray Data and
encodes them with ``map_batches`` on ``actors`` actors, each loading the artifact once with ``threads_per_actor``
ONNX Runtime threads (and reserving as many CPUs). Encoded batches stream back in completion order, carrying their
row, and are regrouped into chunks that the driver commits with ``Collection.add(chunk, vectors=...)`` as they
arrive: a killed build keeps its committed chunks, and the rerun skips them.

The model travels by path: every actor opens ``model_dir`` itself. That holds on one machine, or when the artifact
sits at the same path on every node (shared storage, or baked into the image). Each actor checks that its encoder's
fingerprint is the driver's, so a different copy on some node fails the build instead of mixing vectors.

Without ``--address`` a local Ray instance is started with ``actors x threads_per_actor`` CPUs and stopped after the
build. Ray is an extra (``pip install .[ray]``), imported only here and only when a Ray build runs.
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from encoder import EncoderArtifact
from indexes.documents import Document
from indexes.ray_session import RayClusterError, import_ray

MAX_BLOCKS = 4096  # input blocks of one batch each, up to this many (each block is an object in Ray's store)
THREADS_JOIN_S = 10.0  # for Ray Data's iterator threads to end once the iterator is closed
RAY_ITERATOR_THREAD = "iter_threaded"  # the name of Ray Data's iterator workers (ray.data._internal.block_batching)


class DriverEncoder(EncoderArtifact):
    """The encoder as ``Collection.open`` checks it (fingerprint, dim, precision, base model), from the artifact
    without an ONNX session: a Ray build's driver never encodes (its actors do), so it saves the model's load
    time and memory."""

    def encode(self, texts, kind):
        raise RuntimeError("a Ray build's driver does not encode; its actors do")


class PassageEncoderActor:
    """One actor of the pool: loads the artifact once, then embeds batches of ``{row, text}`` as passages."""

    def __init__(self, model_dir: str, precision: str, threads: int, batch_size: int, fingerprint: str) -> None:
        from encoder import OnnxEncoder

        self.encoder = OnnxEncoder(model_dir, precision=precision, threads=threads)
        self.batch_size = batch_size
        if self.encoder.fingerprint != fingerprint:
            raise RuntimeError(f"the artifact at {model_dir} on {socket.gethostname()} is encoder "
                               f"{self.encoder.fingerprint}, the driver's is {fingerprint}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(text) for text in batch["text"]], "passage", batch_size=self.batch_size)
        return {"row": batch["row"], "vector": vectors}


def encode_with_ray(
    documents: list[Document],
    model_dir: str | Path,
    precision: str,
    fingerprint: str,
    actors: int,
    threads_per_actor: int,
    batch_size: int,
    chunk_size: int,
) -> Iterator[tuple[list[Document], np.ndarray]]:
    """``(documents, vectors)`` chunks of ``chunk_size`` (the last one shorter), in the order they come back, until
    every document is embedded. Needs a ``ray_session``. ``fingerprint``: the encoder the collection expects.
    Ctrl-C: the vectors already back come as a last chunk, then KeyboardInterrupt."""
    ray = import_ray()
    if not documents:
        return
    encoded = encoding_dataset(ray, documents, model_dir, precision, fingerprint, actors, threads_per_actor, batch_size)
    with interrupt_between_batches() as interrupted, iterator_threads_joined(THREADS_JOIN_S):
        batches = iter(encoded.iter_batches(batch_size=None, batch_format="numpy"))
        try:
            pairs = ((batch["row"], batch["vector"]) for batch in until_set(batches, interrupted))
            for rows, vectors in rechunk(pairs, chunk_size):  # on Ctrl-C, what is held is a last, shorter chunk
                yield [documents[row] for row in rows], vectors
        except ray.exceptions.RayError as exc:
            raise RayClusterError(f"the Ray build failed: {root_cause(exc)}") from None
        finally:
            # stops the execution and frees the actors now, while Ray is up: left to garbage collection after
            # ray.shutdown(), Ray Data would start a new Ray session to shut it down, and hang there
            batches.close()
    if interrupted.is_set():
        raise KeyboardInterrupt


def encoding_dataset(ray, documents: list[Document], model_dir: str | Path, precision: str, fingerprint: str,
                     actors: int, threads_per_actor: int, batch_size: int):
    """The lazy Ray Data pipeline: ``{row, text}`` blocks of one batch each -> the actor pool -> ``{row, vector}``."""
    # batches of like lengths pad less; longest first, so the pool's last tasks are its shortest and no actor
    # idles long at the end while another finishes a batch of long texts
    by_length = sorted(range(len(documents)), key=lambda i: len(documents[i].text), reverse=True)
    dataset = ray.data.from_items([{"row": i, "text": documents[i].text} for i in by_length],
                                  override_num_blocks=min(MAX_BLOCKS, -(-len(documents) // batch_size)))
    dataset.context.enable_progress_bars = False  # this dataset's context: the caller's stays as it was
    return dataset.map_batches(
        PassageEncoderActor,
        # absolute: an actor's working directory need not be this process's
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()), "precision": precision,
                               "threads": threads_per_actor, "batch_size": batch_size, "fingerprint": fingerprint},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads_per_actor,
        batch_size=batch_size,
        batch_format="numpy",
    )


@contextmanager
def iterator_threads_joined(timeout_s: float) -> Iterator[None]:
    """On the way out, wait (``timeout_s`` at most) for the worker threads of Ray Data's iterators started inside
    to end. They outlive the iterator's ``close()`` for a moment, and one that calls into Ray after
    ``ray.shutdown()`` makes Ray end the whole process with status 1 (seen on Ctrl-C). Found by Ray's name for
    them; its other threads idle harmlessly."""
    before = set(threading.enumerate())
    try:
        yield
    finally:
        deadline = time.monotonic() + timeout_s
        for thread in set(threading.enumerate()) - before:
            if thread.name == RAY_ITERATOR_THREAD:
                thread.join(max(0.0, deadline - time.monotonic()))


@contextmanager
def interrupt_between_batches() -> Iterator[threading.Event]:
    """Ctrl-C as an event that the caller checks between batches; a second Ctrl-C interrupts at once, as usual.
    A KeyboardInterrupt raised inside Ray Data's iterator can leave its threads waiting for good, and one of them
    then ends the process with status 1 when Ray shuts down; between batches, the iterator closes cleanly."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield requested
        return
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler

    def request_stop(signum, frame) -> None:
        requested.set()
        signal.signal(signal.SIGINT, previous)
        print("\nstopping: committing what is already encoded (Ctrl-C again to stop at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def until_set(items: Iterable, event: threading.Event) -> Iterator:
    """``items`` until ``event`` is set (the item in hand when it is, included)."""
    for item in items:
        yield item
        if event.is_set():
            return


def rechunk(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, vectors)`` batches of any sizes regrouped into chunks of exactly ``size`` rows (the last shorter)."""
    held_rows: list[np.ndarray] = []
    held_vectors: list[np.ndarray] = []
    held = 0
    for rows, vectors in batches:
        held_rows.append(rows)
        held_vectors.append(vectors)
        held += len(rows)
        if held < size:
            continue
        rows, vectors = np.concatenate(held_rows), np.concatenate(held_vectors)
        whole = held - held % size
        for start in range(0, whole, size):
            yield rows[start : start + size], vectors[start : start + size]
        held_rows, held_vectors, held = [rows[whole:]], [vectors[whole:]], held - whole
    if held:
        yield np.concatenate(held_rows), np.concatenate(held_vectors)


def root_cause(error: Exception) -> str:
    """The last line of a Ray error: the remote exception (``RuntimeError: ...``) under Ray's traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
