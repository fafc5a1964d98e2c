"""On-disk embedding cache for evaluation runs: a second run of the same model on the same texts is fast.

Key = the encoder's ``fingerprint`` (which vectors it computes: ONNX file, precision, contract, runtime
version; see ``encoder.runtime``) + the text kind + sha256 of the texts.
One ``.npy`` per key under ``<cache_dir>/<fingerprint>/``, written atomically (temp file + rename), so an
interrupted run never leaves a truncated entry behind.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from encoder.files import atomic_path

DEFAULT_CACHE_DIR = Path("var") / "cache" / "embeddings"


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of the texts list (JSON-encoded, so ["a b"] and ["a", "b"] differ)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_path(encoder, texts: Sequence[str], kind: str, cache_dir: str | Path) -> Path:
    key = hashlib.sha256(f"{kind}\0{texts_digest(texts)}".encode("utf-8")).hexdigest()[:32]
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", str(encoder.fingerprint))
    return Path(cache_dir) / folder / f"{kind}-{len(texts)}-{key}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, unique=True) as tmp, open(tmp, "wb") as file:
        np.save(file, array)


def cached_encode(
    encoder,
    texts: Sequence[str],
    kind: str,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    progress: bool = False,
    batch_size: int | None = None,
) -> np.ndarray:
    """``encoder.encode(texts, kind)`` through the cache (``cache_dir=None`` disables it)."""
    path = cache_path(encoder, texts, kind, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            vectors = None  # unreadable entry: recompute and overwrite
        if vectors is not None and vectors.shape[0] == len(texts) and vectors.dtype == np.float32:
            return vectors
    kwargs: dict = {"progress": True} if progress else {}
    if batch_size:
        kwargs["batch_size"] = batch_size
    vectors = np.asarray(encoder.encode(list(texts), kind, **kwargs), dtype=np.float32)
    if path is not None:
        _save_atomic(path, vectors)
    return vectors
