"""Documents (passages), search hits and the input formats: JSON Lines and Parquet."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from evaluation.jsonl import read_jsonl_rows
from indexes.languages import normalize_language
from indexes.text import check_passage, text_problem

JSONL_FIELDS = ("id", "text", "language", "group", "metadata", "title")  # also a Parquet file's columns
PARQUET_SUFFIXES = (".parquet", ".pq")
MAX_METADATA_DEPTH = 32  # nesting of a document's metadata (responses serialise it; far deeper cannot be)


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


@dataclass
class Document:
    """One passage. Documents sharing a ``group`` are translations of one another."""

    id: str
    text: str
    language: str | None = None  # ISO 639-1, lower-case; None = detected when added
    group: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    text: str
    language: str
    score: float
    group: str | None
    metadata: dict


def validate_document(document: Document) -> Document:
    """A normalised copy of ``document`` (language code lower-cased), or ValueError naming id and field."""
    if not isinstance(document, Document):
        raise ValueError(f"expected a Document, got {type(document).__name__}")
    if not isinstance(document.id, str) or not document.id.strip():
        raise ValueError(f"document id must be a non-empty string, got {excerpt(document.id)}")
    where = f"document {excerpt(document.id)}"
    if text_problem(document.id):
        raise ValueError(f"{where}: id {text_problem(document.id)}")
    if not isinstance(document.text, str) or not document.text.strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    try:
        check_passage(document.text)
    except ValueError as exc:
        raise ValueError(f"{where}: text {exc}") from None
    language = document.language
    if language is not None:
        try:
            language = normalize_language(language)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if document.group is not None and (not isinstance(document.group, str) or not document.group.strip()):
        raise ValueError(f"{where}: group must be a non-empty string or None, got {excerpt(document.group)}")
    if document.group is not None and text_problem(document.group):
        raise ValueError(f"{where}: group {text_problem(document.group)}")
    if not isinstance(document.metadata, dict):
        raise ValueError(f"{where}: metadata must be an object (dict), got {type(document.metadata).__name__}")
    try:
        check_metadata(document.metadata)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    try:
        json.dumps(document.metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: metadata is not JSON-serialisable ({exc})") from None
    return replace(document, language=language)


def check_metadata(metadata: object) -> None:
    """ValueError naming the place of the first key or string with a lone surrogate or a control character, or
    of nesting deeper than MAX_METADATA_DEPTH (responses could not serialise it)."""
    for path, value in _strings(metadata, "metadata"):
        if text_problem(value):
            raise ValueError(f"{path} {text_problem(value)}")


def excerpt(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters: error messages never echo a whole input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _strings(value: object, path: str):
    """(path, string) for every key and string value inside a JSON-like value, depth-first, no recursion;
    ValueError past MAX_METADATA_DEPTH levels."""
    stack = [(path, value, 0)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, (dict, list, tuple)):
            if depth >= MAX_METADATA_DEPTH:
                raise ValueError(f"{path}: nested deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str):
                        yield f"{path} key {excerpt(key)}", key
                    name = f"{path}.{key}" if isinstance(key, str) and len(key) <= 60 else f"{path}[...]"
                    stack.append((name, item, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


def document_from_row(row: object) -> Document:
    """A Document from one JSONL row (a dict). ValueError names the offending field."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(JSONL_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (a row has {', '.join(JSONL_FIELDS)}; put extras in 'metadata')")
    if "id" not in row:
        raise ValueError("field 'id' is missing")
    doc_id = row["id"]
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise ValueError(f"field 'id' must be a non-empty string or an integer, got {row['id']!r}")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("field 'text' is missing or empty" if not text else f"field 'text' must be a string, got {text!r}")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    if "title" in row:
        if not isinstance(row["title"], str):
            raise ValueError(f"field 'title' must be a string, got {row['title']!r}")
        metadata = {**metadata, "title": row["title"]}
    group = row.get("group")
    if isinstance(group, int) and not isinstance(group, bool):
        group = str(group)
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise ValueError(f"field 'group' must be a non-empty string, an integer or null, got {row['group']!r}")
    language = row.get("language")
    if language is not None:
        try:
            language = normalize_language(language)
        except ValueError as exc:
            raise ValueError(f"field 'language': {exc}") from None
    return validate_document(Document(doc_id, text, language, group, metadata))


def read_jsonl(path: str | Path) -> Iterator[Document]:
    """Documents from a JSONL file, one object per line (blank lines skipped).

    Row: ``{"id", "text", "language"?, "group"?, "metadata"?, "title"?}``; ``title`` is kept in the
    metadata (it is shown, not embedded). A bad row raises ValueError naming ``file:line`` and the field.
    """
    for number, row in read_jsonl_rows(path):
        try:
            yield document_from_row(row)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None


def read_documents(path: str | Path) -> Iterator[Document]:
    """Documents from a Parquet file (``.parquet``, ``.pq``) or else a JSONL file (``read_jsonl``: ``.jsonl``,
    ``.json``, ``.gz``, ...), validated alike."""
    if Path(path).suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path)
    return read_jsonl(path)


def read_parquet(path: str | Path) -> Iterator[Document]:
    """Documents from a Parquet file with the JSONL fields as columns: ``id``, ``text`` and optionally
    ``language``, ``group``, ``metadata`` (a JSON string, a struct or a map), ``title``.

    A null is an absent field (a column covers every row). Rows are checked as ``read_jsonl`` checks lines;
    a bad one raises ValueError naming ``file: row N`` (0-based, as pyarrow and pandas count) and the field.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("reading Parquet needs pyarrow: pip install .[ray]") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    unknown = [name for name in parquet.schema_arrow.names if name not in JSONL_FIELDS]
    if unknown:
        raise ValueError(f"{path}: unknown column {unknown[0]!r} (a file has {', '.join(JSONL_FIELDS)}; "
                         "put extras in 'metadata')")
    return _parquet_documents(path, parquet)


def _parquet_documents(path: Path, parquet) -> Iterator[Document]:
    import pyarrow as pa

    number = 0
    try:
        for batch in parquet.iter_batches():
            for values in batch.to_pylist():
                try:
                    yield document_from_row(_parquet_row(values))
                except ValueError as exc:
                    raise ValueError(f"{path}: row {number}: {exc}") from None
                number += 1
    except pa.ArrowException as exc:  # a damaged page past the footer
        raise ValueError(f"{path}: unreadable after row {number} ({exc})") from None


def _parquet_row(values: dict) -> dict:
    """A Parquet row as the JSONL row it stands for: nulls dropped, metadata as the JSON object a JSONL line
    would hold (a top-level map reads as (key, value) pairs; a round trip makes nested values JSON's, so the
    stored metadata compares equal on a rerun)."""
    row = {name: value for name, value in values.items() if value is not None}
    metadata = row.get("metadata")
    if isinstance(metadata, str):
        try:
            row["metadata"] = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise ValueError(f"field 'metadata' is not valid JSON ({exc.msg} at column {exc.colno})") from None
    elif metadata is not None:
        if isinstance(metadata, list) and all(isinstance(item, tuple) and len(item) == 2 for item in metadata):
            metadata = dict(metadata)
        try:
            row["metadata"] = json.loads(json.dumps(metadata, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"field 'metadata' is not JSON-serialisable ({exc})") from None
    return row
