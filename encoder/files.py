"""Atomic file writes, one helper for every package: write a temporary file beside the target, fsync it,
rename it over the target. A reader (or a process restarted after a kill -9) sees the old file or the new
one, never a torn write. Torch-free and numpy-free."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    ``unique``: a private temporary name (several processes may write the same target, e.g. a cache);
    otherwise ``<name>.tmp``, which the owners of a directory clean up on open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        tmp = Path(name)
    else:
        tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
