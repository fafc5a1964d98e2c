"""Per-language FAISS shards over a SQLite document store, bound to the encoder that made the vectors."""
from indexes.collection import Collection
from indexes.documents import Document, Hit, read_documents, read_jsonl, validate_document
from indexes.languages import (
    KNOWN_LANGUAGES,
    LANGUAGE_NAMES,
    detect_language,
    detect_languages,
    normalize_language,
    warm_up_language_detector,
)
from indexes.locks import IndexBusyError
from indexes.manifest import IndexMismatchError, describe, read_manifest
from indexes.shards import INDEX_TYPES

__all__ = [
    "Collection",
    "Document",
    "Hit",
    "INDEX_TYPES",
    "IndexBusyError",
    "IndexMismatchError",
    "KNOWN_LANGUAGES",
    "LANGUAGE_NAMES",
    "describe",
    "detect_language",
    "detect_languages",
    "normalize_language",
    "read_documents",
    "read_jsonl",
    "read_manifest",
    "validate_document",
    "warm_up_language_detector",
]
