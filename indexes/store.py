"""The document store: SQLite (WAL) holding documents and their vectors — the source of truth.

Every document row has an integer ``key`` (the FAISS id). Keys are never reused: replacing a document
deletes its row and inserts a new one, so a key always names the same (text, vector). That is what
lets a shard be checked against the store by its set of keys alone.

One writer connection (used under the collection's write lock) and one read connection per thread:
WAL readers see the last committed transaction, never a half-written one.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from indexes.documents import Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    key      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    text     TEXT NOT NULL,
    language TEXT NOT NULL,
    grp      TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_language ON documents(language);
CREATE INDEX IF NOT EXISTS documents_group ON documents(grp) WHERE grp IS NOT NULL;
CREATE TABLE IF NOT EXISTS vectors (key INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state (name, value) VALUES ('version', 0);
-- Running sums of the stored vectors per language (float64), for calibration: changed in the same
-- transaction as the documents, so they always equal a recount.
CREATE TABLE IF NOT EXISTS language_stats (language TEXT PRIMARY KEY, count INTEGER NOT NULL, sum BLOB NOT NULL);
-- The keys each write removed (deleted or replaced), by the version it made: a follower catches up from
-- them and from the keys above the last it saw, without listing every key. Complete from the version in
-- state 'removals_since' on (a store older than the log starts it at its version then).
CREATE TABLE IF NOT EXISTS removals (version INTEGER NOT NULL, key INTEGER NOT NULL, language TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS removals_version ON removals(version);
INSERT OR IGNORE INTO state (name, value) SELECT 'removals_since', value FROM state WHERE name = 'version';
"""
REMOVALS_KEPT = 100_000  # versions of removals kept; a follower further behind lists every key instead
STATS_MARKER = "language_stats"  # a state row: present once language_stats has been counted for this store
SQL_CHUNK = 500  # ids per IN (...) clause


class StoreClosedError(RuntimeError):
    """The store (and so its collection) was closed; no connection is opened for it any more."""


@dataclass
class StoredRow:
    key: int
    id: str
    text: str
    language: str
    group: str | None
    metadata: str  # JSON

    def document(self) -> Document:
        return Document(self.id, self.text, self.language, self.group, json.loads(self.metadata))


@dataclass
class WriteResult:
    removed: list[tuple[int, str]]  # (key, language) of rows deleted or replaced
    inserted: list[tuple[int, str]]  # (key, language) of new rows, in input order
    replaced: int
    version: int


def _chunks(items: Sequence, size: int = SQL_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_arrays(keys: dict[str, list[int]]) -> dict[str, np.ndarray]:
    return {language: np.asarray(values, dtype=np.int64) for language, values in keys.items()}


def _marks(n: int) -> str:
    return ",".join("?" * n)


class DocumentStore:
    def __init__(self, path: str | Path, dim: int, read_only: bool = False) -> None:
        """``read_only``: a follower's view of a store another process writes (no writer connection; every
        read, ``writer=True`` ones included, goes through this thread's read connection)."""
        self.path = Path(path)
        self.dim = dim
        self.read_only = read_only
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"no document store at {self.path}")
            self._writer = None
        else:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.executescript(SCHEMA)
            self._count_stats_once()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.closed = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        connection.execute("PRAGMA synchronous=FULL")  # a returned add() survives a power cut, not just a crash
        return connection

    def _check_open(self) -> None:
        if self.closed:
            raise StoreClosedError(f"the document store {self.path} is closed")

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection; the one place every read goes through, so none opens after close()."""
        self._check_open()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                if self.closed:  # closed while we connected: don't leak the new connection
                    connection.close()
                    self._check_open()
                self._readers.append(connection)
            self._local.connection = connection
        return connection

    def _db(self, writer: bool) -> sqlite3.Connection:
        """The writer connection (under the collection's write lock: sees its own uncommitted work), or this
        thread's read connection."""
        return self._writer if writer and self._writer is not None else self._reader()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read of this thread inside sees one committed state (one read transaction), so a follower
        catching up never mixes two writes."""
        db = self._reader()
        db.execute("BEGIN")
        try:
            yield
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        with self._readers_lock:
            self.closed = True
            for connection in self._readers:
                connection.close()
            self._readers.clear()
        if self._writer is not None:
            self._writer.close()

    def _count_stats_once(self) -> None:
        """A store written before language_stats existed (or killed while adding it) counts them now."""
        db = self._writer
        if db.execute("SELECT 1 FROM state WHERE name = ?", (STATS_MARKER,)).fetchone():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM language_stats")
            for language, (count, total) in sorted(self.recount_stats(db).items()):
                db.execute("INSERT INTO language_stats (language, count, sum) VALUES (?, ?, ?)",
                           (language, count, total.tobytes()))
            db.execute("INSERT INTO state (name, value) VALUES (?, 1)", (STATS_MARKER,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def recount_stats(self, db: sqlite3.Connection | None = None) -> dict[str, tuple[int, np.ndarray]]:
        """Per-language (count, float64 sum) recounted from the stored vectors (the reference for the
        running sums)."""
        db = db or self._reader()
        out: dict[str, tuple[int, np.ndarray]] = {}
        rows = db.execute("SELECT d.language, v.vector FROM documents d JOIN vectors v ON v.key = d.key ORDER BY d.key")
        while chunk := rows.fetchmany(SQL_CHUNK):
            for language, blob in chunk:
                count, total = out.get(language, (0, np.zeros(self.dim)))
                out[language] = (count + 1, total + np.frombuffer(blob, dtype=np.float32))
        return out

    def language_stats(self, writer: bool = False) -> dict[str, tuple[int, np.ndarray]]:
        """The running per-language (count, float64 sum) of the stored vectors."""
        db = self._db(writer)
        return {language: (count, np.frombuffer(blob, dtype=np.float64).copy())
                for language, count, blob in db.execute("SELECT language, count, sum FROM language_stats")}

    def _update_stats(self, db: sqlite3.Connection, removed: list[tuple[int, str]],
                      upserts: Sequence[tuple[Document, np.ndarray]]) -> None:
        """Inside write()'s transaction: subtract the removed rows' vectors, add the inserted ones."""
        delta: dict[str, list] = {}

        def add(language: str, sign: int, vector: np.ndarray) -> None:
            entry = delta.setdefault(language, [0, np.zeros(self.dim)])
            entry[0] += sign
            entry[1] += sign * vector.astype(np.float64)

        for chunk in _chunks([key for key, _ in removed]):
            query = (f"SELECT d.language, v.vector FROM documents d JOIN vectors v ON v.key = d.key "
                     f"WHERE d.key IN ({_marks(len(chunk))})")
            for language, blob in db.execute(query, chunk):
                add(language, -1, np.frombuffer(blob, dtype=np.float32))
        for doc, vector in upserts:
            add(doc.language, 1, np.asarray(vector, dtype=np.float32))
        for language, (change, total) in sorted(delta.items()):
            row = db.execute("SELECT count, sum FROM language_stats WHERE language = ?", (language,)).fetchone()
            count = (row[0] if row else 0) + change
            if count <= 0:  # no drift survives an emptied language
                db.execute("DELETE FROM language_stats WHERE language = ?", (language,))
                continue
            if row:
                total = total + np.frombuffer(row[1], dtype=np.float64)
            db.execute("INSERT OR REPLACE INTO language_stats (language, count, sum) VALUES (?, ?, ?)",
                       (language, count, total.tobytes()))

    # --- writes (caller holds the collection's write lock) -----------------------------------------------

    def write(self, upserts: Sequence[tuple[Document, np.ndarray]] = (), deletes: Sequence[str] = ()) -> WriteResult:
        """Upsert documents with their vectors and delete ids, all in ONE transaction."""
        if self._writer is None:
            raise RuntimeError(f"the document store {self.path} is open read-only (a follower); writes go to its writer")
        db = self._writer
        ids = [doc.id for doc, _ in upserts] + list(deletes)
        db.execute("BEGIN IMMEDIATE")
        try:
            old: dict[str, tuple[int, str]] = {}
            for chunk in _chunks(ids):
                query = f"SELECT id, key, language FROM documents WHERE id IN ({_marks(len(chunk))})"
                old.update({row[0]: (row[1], row[2]) for row in db.execute(query, chunk)})
            removed = list(old.values())
            if not upserts and not removed:  # nothing to do: leave the version alone
                db.execute("ROLLBACK")
                return WriteResult([], [], 0, self._version(db))
            self._update_stats(db, removed, upserts)
            for chunk in _chunks([key for key, _ in removed]):
                db.execute(f"DELETE FROM documents WHERE key IN ({_marks(len(chunk))})", chunk)
                db.execute(f"DELETE FROM vectors WHERE key IN ({_marks(len(chunk))})", chunk)
            (base,) = db.execute(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'documents'), 0)"
            ).fetchone()
            inserted = [(base + 1 + i, doc.language) for i, (doc, _) in enumerate(upserts)]
            db.executemany(
                "INSERT INTO documents (key, id, text, language, grp, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (key, doc.id, doc.text, doc.language, doc.group, json.dumps(doc.metadata, ensure_ascii=False))
                    for (key, _), (doc, _) in zip(inserted, upserts)
                ],
            )
            db.executemany(
                "INSERT INTO vectors (key, vector) VALUES (?, ?)",
                [(key, np.ascontiguousarray(vector, dtype=np.float32).tobytes()) for (key, _), (_, vector) in zip(inserted, upserts)],
            )
            db.execute("UPDATE state SET value = value + 1 WHERE name = 'version'")
            version = self._version(db)
            db.executemany("INSERT INTO removals (version, key, language) VALUES (?, ?, ?)",
                           [(version, key, language) for key, language in removed])
            if version % 1000 == 0:  # now and then: forget removals no follower that close behind needs
                oldest = version - REMOVALS_KEPT
                if db.execute("DELETE FROM removals WHERE version <= ?", (oldest,)).rowcount:
                    db.execute("UPDATE state SET value = MAX(value, ?) WHERE name = 'removals_since'", (oldest,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have ended it already; don't hide the real error
                db.execute("ROLLBACK")
            raise
        replaced = sum(1 for doc, _ in upserts if doc.id in old)
        return WriteResult(removed, inserted, replaced, version)

    # --- reads -------------------------------------------------------------------------------------------

    def version(self) -> int:
        return self._version(self._reader())

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        return db.execute("SELECT value FROM state WHERE name = 'version'").fetchone()[0]

    def changes_since(self, version: int, max_key: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        """What the writes after ``version`` did, for a follower whose shards hold keys up to ``max_key``:
        ``(added, removed)`` keys by language (added: the live keys above ``max_key``; removed: the keys up to
        it that those writes removed), or None when the log no longer reaches back that far."""
        db = self._reader()
        since = db.execute("SELECT value FROM state WHERE name = 'removals_since'").fetchone()
        if since is None or version < since[0]:  # a store no writer has opened since the log came, or pruned
            return None
        added: dict[str, list[int]] = {}
        for key, language in db.execute("SELECT key, language FROM documents WHERE key > ? ORDER BY key", (max_key,)):
            added.setdefault(language, []).append(key)
        removed: dict[str, list[int]] = {}
        for key, language in db.execute("SELECT key, language FROM removals WHERE version > ? AND key <= ?",
                                        (version, max_key)):
            removed.setdefault(language, []).append(key)
        return _key_arrays(added), _key_arrays(removed)

    def rows_by_id(self, ids: Sequence[str]) -> dict[str, StoredRow]:
        out: dict[str, StoredRow] = {}
        db = self._reader()
        for chunk in _chunks(list(ids)):
            query = f"SELECT key, id, text, language, grp, metadata FROM documents WHERE id IN ({_marks(len(chunk))})"
            out.update({row[1]: StoredRow(*row) for row in db.execute(query, chunk).fetchall()})
        return out

    def rows_by_key(self, keys: Sequence[int]) -> dict[int, StoredRow]:
        out: dict[int, StoredRow] = {}
        db = self._reader()
        for chunk in _chunks([int(key) for key in keys]):
            query = f"SELECT key, id, text, language, grp, metadata FROM documents WHERE key IN ({_marks(len(chunk))})"
            out.update({row[0]: StoredRow(*row) for row in db.execute(query, chunk).fetchall()})
        return out

    def vectors(self, keys: Sequence[int], writer: bool = False) -> np.ndarray:
        """Stored vectors of ``keys`` in that order (float32, (len(keys), dim))."""
        db = self._db(writer)
        found: dict[int, bytes] = {}
        for chunk in _chunks([int(key) for key in keys]):
            query = f"SELECT key, vector FROM vectors WHERE key IN ({_marks(len(chunk))})"
            found.update(db.execute(query, chunk).fetchall())
        missing = [key for key in keys if int(key) not in found]
        if missing:
            raise KeyError(f"no stored vector for keys {missing[:5]}")
        return self._to_array([found[int(key)] for key in keys])

    def language_keys(self, writer: bool = False) -> dict[str, np.ndarray]:
        """Keys of every stored document, grouped by language."""
        db = self._db(writer)
        out: dict[str, list[int]] = {}
        for key, language in db.execute("SELECT key, language FROM documents ORDER BY key").fetchall():
            out.setdefault(language, []).append(key)
        return _key_arrays(out)

    def language_vectors(self, language: str, writer: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of all documents in ``language``."""
        db = self._db(writer)
        rows = db.execute(
            "SELECT d.key, v.vector FROM documents d JOIN vectors v ON v.key = d.key WHERE d.language = ? ORDER BY d.key",
            (language,),
        ).fetchall()
        keys = np.asarray([key for key, _ in rows], dtype=np.int64)
        return keys, self._to_array([blob for _, blob in rows])

    def _to_array(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), dtype=np.float32)
        array = np.frombuffer(b"".join(blobs), dtype=np.float32)
        if array.size != len(blobs) * self.dim:
            raise ValueError(f"stored vectors do not have dimension {self.dim}")
        return array.reshape(len(blobs), self.dim).copy()

    def group_count(self) -> int:
        return self._reader().execute("SELECT COUNT(DISTINCT grp) FROM documents WHERE grp IS NOT NULL").fetchone()[0]

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        rows = self._reader().execute("SELECT grp, id FROM documents WHERE grp IS NOT NULL ORDER BY grp, key")
        for group, doc_id in rows.fetchall():
            out.setdefault(group, []).append(doc_id)
        return out

    def iter_documents(self, batch: int = 1000) -> Iterator[Document]:
        """All documents in insertion order, from a private connection (one consistent snapshot)."""
        self._check_open()
        connection = self._connect()
        try:
            connection.execute("BEGIN")  # hold one read snapshot for the whole iteration
            cursor = connection.execute("SELECT key, id, text, language, grp, metadata FROM documents ORDER BY key")
            while rows := cursor.fetchmany(batch):
                for row in rows:
                    yield StoredRow(*row).document()
            connection.execute("COMMIT")
        finally:
            connection.close()

