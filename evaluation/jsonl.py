"""JSON Lines input, read the same way by the trainer, the evaluator and the indexes: rows with their line
numbers, blank lines skipped, a UTF-8 BOM tolerated, ``.gz`` read transparently, and every error naming
``file:line``. Torch-free."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator


def read_jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; ValueError naming ``file:line`` on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
