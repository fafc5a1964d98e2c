"""The encoder on Ray Serve: the ``Encoder`` deployment runs the ONNX model; ``RemoteEncoder`` is what the
Writer and the search replicas encode through.

The deployment loads ``OnnxEncoder`` once per replica. ``@serve.batch`` queues calls per kind (two batched
methods, so query and passage prefixes never share a batch) and merges the calls that reach it together
(from several replicas and the writer), up to ``max_encoder_batch`` texts: a call's texts are flattened
with the others', embedded in one ``encode``, and each call gets its rows back. A batch waits for no
companions (``batch_wait_timeout_s=0``): each caller's own ``BatchingEncoder`` already gathered its
concurrent requests' texts into the call (``encoder_batch_wait_ms``), and waiting again would only add
latency. One worker thread runs the batches in turn, so ONNX Runtime's intra-op pool (``threads``) serves
one batch at a time, as in ``app.batching``; the event loop stays free to take the next calls meanwhile.

``RemoteEncoder`` is an ``encoder.TextEncoder``: ``dim``, ``fingerprint``, ``precision`` and ``count_tokens``
come from the artifact on disk (its ``artifact.json`` and tokenizer; no ONNX session is loaded), so a
search replica can count a request's tokens and check its index without a round trip. A call whose
encoder replica dies is sent again (embedding is a pure function: another replica gives the same vectors).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from ray import serve
from ray.exceptions import RayActorError

from encoder import EncoderArtifact
from encoder.contract import TextKind

logger = logging.getLogger("babelsearch")

ENCODE_ATTEMPTS = 3  # an encoder replica that dies mid-call costs one more try on another replica
ENCODE_TIMEOUT_S = 120.0  # a call waits this long (for a batch, or for a restarting replica) before failing


def _texts_in(calls: list[list[str]]) -> int:
    return sum(len(texts) for texts in calls)


@serve.deployment(name="Encoder")
class Encoder:
    """``threads``: ONNX Runtime intra-op threads (0: one per core). ``max_batch_texts``: the service's
    ``max_encoder_batch``."""

    def __init__(self, model_dir: str, precision: str, threads: int, max_batch_texts: int) -> None:
        from app.cluster.process import prepare_process
        from encoder.runtime import OnnxEncoder

        prepare_process()  # before the model loads
        self._encoder = OnnxEncoder(model_dir, precision, threads=threads or None)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="onnx")
        for method in (self.encode_queries, self.encode_passages):
            method.set_max_batch_size(max_batch_texts)

    def describe(self) -> dict:
        """What the clients check their own view of the artifact against."""
        return {"dim": self._encoder.dim, "fingerprint": self._encoder.fingerprint,
                "precision": self._encoder.precision}

    @serve.batch(batch_wait_timeout_s=0, batch_size_fn=_texts_in)
    async def encode_queries(self, calls: list[list[str]]) -> list[np.ndarray]:
        return await self._encode(calls, "query")

    @serve.batch(batch_wait_timeout_s=0, batch_size_fn=_texts_in)
    async def encode_passages(self, calls: list[list[str]]) -> list[np.ndarray]:
        return await self._encode(calls, "passage")

    async def _encode(self, calls: list[list[str]], kind: TextKind) -> list[np.ndarray]:
        texts = [text for texts in calls for text in texts]
        vectors = await asyncio.get_running_loop().run_in_executor(self._worker, self._encoder.encode, texts, kind)
        bounds = np.cumsum([0] + [len(texts) for texts in calls])
        return [vectors[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


class RemoteEncoder(EncoderArtifact):
    """A ``TextEncoder`` whose vectors come from the ``Encoder`` deployment behind ``handle``; its identity
    and token counts come from the artifact on disk (``EncoderArtifact``: no ONNX session). ``max_texts``:
    the most texts one call sends (the deployment's batch size; longer calls go in chunks)."""

    def __init__(self, handle, model_dir: str | Path, precision: str, max_texts: int) -> None:
        super().__init__(model_dir, precision)
        self._handle, self.max_texts = handle, max_texts

    def check_served(self, served: dict) -> None:
        """Raise unless the deployment serves the vectors this artifact describes (``Encoder.describe``)."""
        mine = {"dim": self.dim, "fingerprint": self.fingerprint, "precision": self.precision}
        if served != mine:
            raise RuntimeError(f"the Encoder deployment serves {served}, but {self.artifact_dir} gives {mine}: "
                               "every node must see the same model artifact")

    def encode(self, texts: Sequence[str], kind: TextKind) -> np.ndarray:
        """Blocks: call it from a thread, never from an event loop (Serve refuses that)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        self.contract.prefix(kind)  # a clear error for an unknown kind, before any call
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [self._call(texts[start : start + self.max_texts], kind)
                  for start in range(0, len(texts), self.max_texts)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _call(self, texts: list[str], kind: TextKind) -> np.ndarray:
        method = self._handle.encode_queries if kind == "query" else self._handle.encode_passages
        for attempt in range(1, ENCODE_ATTEMPTS + 1):
            try:
                return np.asarray(method.remote(texts).result(timeout_s=ENCODE_TIMEOUT_S), dtype=np.float32)
            except RayActorError:
                if attempt == ENCODE_ATTEMPTS:
                    raise
                logger.warning("an encoder replica died during a call; sending it again (%d/%d)",
                               attempt + 1, ENCODE_ATTEMPTS)
        raise AssertionError("unreachable")
