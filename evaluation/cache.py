"""On-disk embedding cache for evaluation runs: a second run of the same model on the same texts is fast.

Key = the encoder's ``fingerprint`` (which vectors it computes: ONNX file, precision, contract, runtime
version; see ``encoder.runtime``) + the text kind + sha256 of the texts.
One ``.npy`` per key under ``<cache_dir>/<fingerprint>/``, written atomically (temp file + rename), so an
interrupted run never leaves a truncated entry behind. Beside each, ``<key>.texts.json`` lists its texts, so a
list whose every text is already cached (the test half after the full set, say) is assembled from those
entries instead of encoded again: the same vectors up to batch padding, ~1e-7 in fp32 (int8 encodes one text
per call, so exactly).
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
    if path is not None:
        vectors = _assemble(path.parent, texts, kind)
        if vectors is not None:
            _save_atomic(path, vectors)
            return vectors
    kwargs: dict = {"progress": True} if progress else {}
    if batch_size:
        kwargs["batch_size"] = batch_size
    vectors = np.asarray(encoder.encode(list(texts), kind, **kwargs), dtype=np.float32)
    if path is not None:
        _save_atomic(path, vectors)
        with atomic_path(_texts_path(path), unique=True) as tmp:
            Path(tmp).write_text(json.dumps(list(texts), ensure_ascii=False), encoding="utf-8")
    return vectors


def _texts_path(path: Path) -> Path:
    return path.with_name(path.stem + ".texts.json")


def _assemble(folder: Path, texts: Sequence[str], kind: str) -> np.ndarray | None:
    """``texts``' vectors gathered from this fingerprint's other entries of ``kind``, or None if one is missing."""
    if not folder.is_dir():
        return None
    wanted = set(texts)
    found: dict[str, np.ndarray] = {}
    for sidecar in sorted(folder.glob(f"{kind}-*.texts.json")):
        entry = sidecar.with_name(sidecar.name[: -len(".texts.json")] + ".npy")
        try:
            cached_texts = json.loads(sidecar.read_text(encoding="utf-8"))
            if not wanted.intersection(cached_texts):
                continue
            vectors = np.load(entry, allow_pickle=False)
        except (OSError, ValueError):
            continue
        if vectors.shape[0] != len(cached_texts) or vectors.dtype != np.float32:
            continue
        for text, vector in zip(cached_texts, vectors):
            if text in wanted:
                found.setdefault(text, vector)
        if len(found) == len(wanted):
            return np.stack([found[text] for text in texts]) if texts else None
    return None
