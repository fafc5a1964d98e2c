"""The index manifest: which encoder made the vectors, the index type, the counts; and the check that refuses
an encoder whose vectors are not comparable with the stored ones.

``describe`` reads an index without opening it for writing (it works while a service has it open)."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

FORMAT = "babelsearch-index/1"
MANIFEST_FILE = "manifest.json"
DATABASE_FILE = "documents.sqlite3"
SHARD_DIR = "shards"


class IndexMismatchError(ValueError):
    """The index was built with another encoder (fingerprint or dimension): its vectors are not comparable."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no index at {directory} ({MANIFEST_FILE} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a babelsearch index manifest (expected format {FORMAT!r})")
    return manifest


def describe(directory: str | Path) -> dict:
    """Manifest and live counts of an index without opening it for writing (works while a service has it
    open): reads the store through a read-only SQLite connection."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    database = directory / DATABASE_FILE
    if not database.is_file():
        raise FileNotFoundError(f"{directory} has a manifest but no {DATABASE_FILE}")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        languages = dict(connection.execute(
            "SELECT language, COUNT(*) FROM documents GROUP BY language ORDER BY language").fetchall())
        (groups,) = connection.execute("SELECT COUNT(DISTINCT grp) FROM documents WHERE grp IS NOT NULL").fetchone()
        (version,) = connection.execute("SELECT value FROM state WHERE name = 'version'").fetchone()
    finally:
        connection.close()
    shard_files = {p.stem: p.stat().st_size for p in sorted((directory / SHARD_DIR).glob("*.faiss"))}
    return {
        **{key: value for key, value in manifest.items() if key != "shards"},
        "version": version,
        "documents": sum(languages.values()),
        "languages": languages,
        "groups": groups,
        "shard_files": shard_files,
        "disk_bytes": sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()),
    }


def describe_encoder(encoder) -> dict:
    info = getattr(encoder, "info", None)
    return {
        "encoder_fingerprint": str(encoder.fingerprint),
        "dim": int(encoder.dim),
        "base_model": getattr(info, "base_model", None) or getattr(encoder, "base_model", None),
        "precision": getattr(encoder, "precision", None),
    }


def check_encoder(manifest: dict, encoder, directory: str | Path) -> None:
    """Refuse an encoder whose vectors differ from the ones the index holds."""
    mine = describe_encoder(encoder)
    if manifest["encoder_fingerprint"] != mine["encoder_fingerprint"] or int(manifest["dim"]) != mine["dim"]:
        raise IndexMismatchError(
            f"the index at {directory} was built with encoder {manifest['encoder_fingerprint']} "
            f"(dim {manifest['dim']}, {manifest.get('base_model')}, {manifest.get('precision')}), but the loaded "
            f"encoder is {mine['encoder_fingerprint']} (dim {mine['dim']}, {mine['base_model']}, {mine['precision']}); "
            "serve the index with the model it was built with, or rebuild it into a new directory with "
            "`python -m indexes build --model ARTIFACT_DIR --input docs.jsonl --out NEW_DIR`"
        )
