"""A collection: documents in SQLite (the source of truth) + one in-memory FAISS shard per language.

On disk (``<directory>/``)::

    manifest.json         the encoder the vectors came from (fingerprint, dim, base model), index type, counts
                          (counts as of the last open/checkpoint/close; the store has the live ones)
    documents.sqlite3     documents + float32 vectors (+ -wal/-shm while open), one transaction per write
    shards/<lang>.faiss   a cache of each language's FAISS index, written on close/checkpoint
    .lock                 flock held by the process that has the collection open

Crash safety: add()/delete() encode first, then commit documents and vectors in one SQLite transaction,
then update the shards in memory. Shard files are only a cache: on open each shard's keys are compared
with the store's and repaired from the stored vectors (never re-encoded), so a process killed at any
moment reopens to exactly the last committed state.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from encoder import TextEncoder
from encoder.calibration import Calibrator, LanguageStatistics
from encoder.files import write_json_atomic
from indexes.calibrated import ShardNorms, search_shard, shifted_query
from indexes.documents import Document, Hit, validate_document
from indexes.languages import LanguageDetector, default_detector, detect_documents, normalize_language
from indexes.locks import DirectoryLock, ReadWriteLock
from indexes.manifest import (
    DATABASE_FILE, FORMAT, MANIFEST_FILE, SHARD_DIR, check_encoder, describe_encoder, now_iso, read_manifest,
)
from indexes.shards import SHARD_TYPES, Shard, check_index_type, shard_type_for, single_threaded
from indexes.store import DocumentStore, StoredRow, WriteResult

logger = logging.getLogger("babelsearch.indexes")

CHECKPOINT_SECONDS = 60.0  # during long ingests, write shard files at most this often (faster reopen)


class Collection:
    """Use ``Collection.open(...)``. Thread-safe: searches run concurrently; writes are exclusive and
    atomic (a search sees a write completely or not at all)."""

    def __init__(self, directory: Path, encoder: TextEncoder | None, manifest: dict, store: DocumentStore,
                 lock: DirectoryLock | None) -> None:
        self.directory = directory
        self.encoder = encoder
        # the languages served (None: not known); documents added without a language are detected among
        # all languages, with these preferred for non-Latin scripts, or with ``document_languages =
        # "served"`` among these alone (indexes.languages.detect_documents)
        self.detector: LanguageDetector | None = None
        self.document_languages = "all"
        self._manifest = manifest
        self._store = store
        self._lock = lock
        self._rw = ReadWriteLock()
        self._shards: dict[str, Shard] = {}
        self._dirty: set[str] = set()
        self._closed = False
        self._last_checkpoint = time.monotonic()
        self._statistics = self._read_statistics(writer=True)
        self._norms = ShardNorms()
        # what the shards are (auto: by the collection's size, with the recorded type as the hysteresis
        # state); set again from the store's total whenever the shards are loaded
        recorded = manifest.get("shard_type")
        self._shard_type = recorded if manifest["index_type"] == "auto" and recorded in SHARD_TYPES \
            else shard_type_for(manifest["index_type"], 0)
        self.follower = lock is None  # a read-only view of an index another process writes (open_follower)
        self._version: int | None = None  # a follower: the store version its shards mirror
        self._max_key = 0  # a follower: the highest key its shards have seen (newer documents have higher ones)

    # --- opening -----------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | Path, encoder: TextEncoder | None, index_type: str | None = None, create: bool = True
    ) -> "Collection":
        """Open (or create) the collection in ``directory``.

        ``encoder``: an ``encoder.TextEncoder`` (``.encode(texts, kind)``, ``.dim``, ``.fingerprint``); None opens for maintenance
        (delete, info, search by vector) without the encoder check. ``index_type``: auto | flat | hnsw |
        ivf; None (the default) keeps an existing collection's type and makes a new one auto (flat shards up
        to ``AUTO_IVF_FROM`` passages in all, then ivf). A type different from the recorded one rebuilds the
        shards from the stored vectors.
        """
        directory = Path(directory)
        if index_type is not None:
            check_index_type(index_type)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            if not create:
                raise FileNotFoundError(f"no index at {directory} ({MANIFEST_FILE} is missing)")
            if encoder is None:
                raise ValueError(f"creating a collection at {directory} needs an encoder")
            strangers = sorted(p.name for p in directory.iterdir() if p.name not in (".lock", MANIFEST_FILE + ".tmp")) \
                if directory.is_dir() else []
            if strangers:
                raise ValueError(
                    f"{directory} is not empty ({', '.join(strangers[:3])}{', ...' if len(strangers) > 3 else ''}) and "
                    f"holds no babelsearch index ({MANIFEST_FILE} is missing); use an empty or new directory"
                )
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(directory)
        lock.acquire()
        try:
            if manifest_path.is_file():
                manifest = read_manifest(directory)
                if encoder is not None:
                    check_encoder(manifest, encoder, directory)
            else:
                manifest = cls._create_manifest(directory, encoder, index_type or "auto")
            if index_type is not None and index_type != manifest["index_type"]:
                logger.warning("index %s: index type %s -> %s (rebuilding shards from stored vectors)",
                               directory, manifest["index_type"], index_type)
                manifest["index_type"] = index_type
            store = DocumentStore(directory / DATABASE_FILE, int(manifest["dim"]))
            collection = cls(directory, encoder, manifest, store, lock)
        except BaseException:
            lock.release()
            raise
        try:
            collection._load_shards()
            collection._write_manifest()
        except BaseException:
            collection._store.close()
            lock.release()
            raise
        return collection

    @classmethod
    def open_follower(cls, directory: str | Path, encoder: TextEncoder | None) -> "Collection":
        """A read-only view of the index in ``directory`` that another process writes (its one writer, which
        holds the lock): search replicas (``app.cluster``). It takes no lock, writes no file, and before
        every read catches up with the writer's last committed transaction (a version check, one SQLite
        read; after a write, the changed keys are applied from the stored vectors). So a read that starts
        after a write was acknowledged sees it. ``add``/``delete``/``checkpoint`` raise."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if encoder is not None:
            check_encoder(manifest, encoder, directory)
        store = DocumentStore(directory / DATABASE_FILE, int(manifest["dim"]), read_only=True)
        try:
            collection = cls(directory, encoder, manifest, store, lock=None)
            collection.refresh()
        except BaseException:
            store.close()
            raise
        return collection

    def refresh(self) -> bool:
        """A follower: mirror the store's last committed state (shards, statistics, index type); True when
        something had changed. The writer's shard files are read once, at the first refresh."""
        if not self.follower:
            raise RuntimeError("refresh() is for followers (Collection.open_follower); the writer is always current")
        self._check_open()
        with self._rw.write(), self._store.snapshot():
            self._check_open()
            version = self._store.version()
            if version == self._version:
                return False
            manifest = read_manifest(self.directory)
            changes = None if self._version is None or manifest["index_type"] != self._manifest["index_type"] \
                else self._store.changes_since(self._version, self._max_key)
            if changes is None or not self._follow_changes(*changes):
                self._follow_all(manifest)
            self._manifest = manifest
            self._statistics = self._read_statistics()
            self._version = version
        return True

    def _follow_changes(self, added: dict[str, np.ndarray], removed: dict[str, np.ndarray]) -> bool:
        """Apply the writes since the last refresh from the store's log (keys are never reused and only grow,
        so new documents are the keys above the highest seen). False when the shards must be rebuilt instead
        (auto crossed a size threshold)."""
        for language in sorted(set(added) | set(removed)):
            shard = self._shards.get(language) or Shard.empty(self._shard_type, self.dim)
            shard.remove(removed.get(language, ()))
            keys = added.get(language, np.zeros(0, dtype=np.int64))
            shard.add(keys, self._store.vectors(keys))
            if len(keys):
                self._max_key = max(self._max_key, int(keys.max()))
            if len(shard) == 0:
                self._shards.pop(language, None)
            else:
                self._shards[language] = self._build_shard(language) if shard.needs_rebuild() else shard
        return shard_type_for(self._manifest["index_type"], self._live_total(), self._shard_type) == self._shard_type

    def _follow_all(self, manifest: dict) -> None:
        """Every shard made to match the store's keys (the first refresh reads the writer's shard files)."""
        first = self._version is None
        stored = self._store.language_keys()
        shard_type = shard_type_for(manifest["index_type"], _total(stored), self._shard_type)
        if shard_type != self._shard_type or manifest["index_type"] != self._manifest["index_type"]:
            self._shards = {}  # the writer rebuilt the index as another type
        self._manifest, self._shard_type = manifest, shard_type
        shards: dict[str, Shard] = {}
        for language, keys in stored.items():
            shard = self._shards.get(language) or (self._shard_file(language) if first else None)
            shards[language] = self._reconciled(language, shard, keys)[0]
        self._shards = shards
        self._max_key = max((int(keys.max()) for keys in stored.values() if len(keys)), default=0)

    def _catch_up(self) -> None:
        if self._store.version() != self._version:
            self.refresh()

    def _shard_file(self, language: str) -> Shard | None:
        path = self.directory / SHARD_DIR / f"{language}.faiss"
        if not path.is_file():
            return None
        try:
            return Shard.load(path, self._shard_type, self.dim)
        except Exception as exc:  # unreadable or of another type: the store has everything needed
            logger.warning("rebuilding shard %s: %s", path, exc)
            return None

    def _reconciled(self, language: str, shard: Shard | None, keys: np.ndarray) -> tuple[Shard, bool]:
        """``shard`` made to hold exactly ``keys`` (the store's keys of ``language``), from the stored vectors;
        built from them when None. Returns (shard, changed)."""
        if shard is None:
            return self._build_shard(language), True
        present = shard.all_keys()
        extra = present[~np.isin(present, keys)]
        missing = keys[~np.isin(keys, present)]
        changed = bool(len(extra) or len(missing))
        if changed:
            logger.info("shard %s: %d stale, %d missing vectors restored from the store", language, len(extra), len(missing))
            shard.remove(extra)
            shard.add(missing, self._store.vectors(missing, writer=True))
        if shard.needs_rebuild():
            return self._build_shard(language), True
        return shard, changed

    @staticmethod
    def _create_manifest(directory: Path, encoder, index_type: str) -> dict:
        now = now_iso()
        manifest = {"format": FORMAT, **describe_encoder(encoder), "index_type": index_type, "created": now, "updated": now}
        write_json_atomic(directory / MANIFEST_FILE, manifest)
        return manifest

    def _load_shards(self) -> None:
        """Load the shard files and make each match the store exactly (runs without concurrent access)."""
        shard_dir = self.directory / SHARD_DIR
        shard_dir.mkdir(exist_ok=True)
        for leftover in shard_dir.glob("*.tmp"):
            leftover.unlink()
        stored = self._store.language_keys(writer=True)
        self._shard_type = shard_type_for(self._manifest["index_type"], _total(stored), self._shard_type)
        shards: dict[str, Shard] = {}
        dirty: set[str] = set()
        for path in shard_dir.glob("*.faiss"):
            if path.stem not in stored:
                path.unlink()
        for language, keys in stored.items():
            shard, changed = self._reconciled(language, self._shard_file(language), keys)
            if changed:
                dirty.add(language)
            shards[language] = shard
        self._shards, self._dirty = shards, dirty  # all at once: never a half-loaded set of shards

    def _build_shard(self, language: str) -> Shard:
        keys, vectors = self._store.language_vectors(language, writer=True)
        return Shard.build(self._shard_type, self.dim, keys, vectors)

    # --- writes ------------------------------------------------------------------------------------------

    def add(
        self,
        documents: Iterable[Document],
        batch_size: int = 64,
        progress: bool = False,
        skip_unchanged: bool = False,
        vectors: np.ndarray | None = None,
    ) -> dict:
        """Upsert ``documents`` (by id) in one transaction: all of them or, on error, none.

        Documents without a language get the detected one. A re-added id replaces the stored document;
        its vector is reused when the text is unchanged. ``skip_unchanged`` leaves identical documents alone
        (counted as "unchanged"). ``vectors``: the documents' passage vectors, already encoded elsewhere
        (a distributed build, ``indexes.ray_build``), one row per document in order; they must come from
        this collection's encoder, which is then not called. Returns ``{"added", "replaced", "unchanged",
        "languages": {lang: n}}``.
        """
        self._check_writable()
        if self.encoder is None:
            raise RuntimeError("this collection was opened without an encoder; it cannot add documents")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(documents, Document):
            documents = [documents]
        documents = list(documents)
        checked = check_vectors(vectors, len(documents), self.dim) if vectors is not None else None
        prepared = self._prepare(documents)  # every document validated (so each has an id) before anything else
        # by id, the last row of a repeated id winning, as in _prepare
        given = dict(zip((doc.id for doc in documents), checked)) if checked is not None else None
        documents = prepared
        with self._reading():
            stored = self._store.rows_by_id([doc.id for doc in documents])
        unchanged = [doc for doc in documents if doc.id in stored and _same(doc, stored[doc.id])] if skip_unchanged else []
        skip = {doc.id for doc in unchanged}
        writes = [doc for doc in documents if doc.id not in skip]
        vectors = (np.stack([given[doc.id] for doc in writes]) if writes else np.zeros((0, self.dim), np.float32)) \
            if given is not None else self._vectors_for(writes, stored, batch_size, progress)
        result = {"added": 0, "replaced": 0, "unchanged": len(unchanged), "languages": {}}
        if not writes:
            return result
        with self._rw.write():
            self._check_open()
            written = self._store.write(list(zip(writes, vectors)))
            self._apply(written, vectors)
        result.update(
            added=len(writes) - written.replaced,
            replaced=written.replaced,
            languages=dict(sorted(Counter(doc.language for doc in writes).items())),
        )
        return result

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many existed."""
        self._check_writable()
        ids = list(dict.fromkeys(ids))
        bad = [doc_id for doc_id in ids if not isinstance(doc_id, str) or not doc_id]
        if bad:
            raise ValueError(f"ids must be non-empty strings, got {bad[0]!r}")
        if not ids:
            return 0
        with self._rw.write():
            self._check_open()
            written = self._store.write(deletes=ids)
            if written.removed:
                self._apply(written, np.zeros((0, self.dim), dtype=np.float32))
        return len(written.removed)

    def unchanged_ids(self, documents: Iterable[Document]) -> set[str]:
        """Ids of ``documents`` already stored exactly so (text, group, metadata, and language if given)."""
        self._check_open()
        documents = [validate_document(doc) for doc in documents]
        with self._reading():
            stored = self._store.rows_by_id([doc.id for doc in documents])
        return {doc.id for doc in documents if doc.id in stored and _same(doc, stored[doc.id])}

    def _prepare(self, documents: Iterable[Document]) -> list[Document]:
        """Validate everything before anything is written; the last occurrence of a repeated id wins."""
        if isinstance(documents, Document):
            documents = [documents]
        by_id: dict[str, Document] = {}
        for doc in documents:
            doc = validate_document(doc)
            by_id.pop(doc.id, None)
            by_id[doc.id] = doc
        prepared = list(by_id.values())
        unknown = [i for i, doc in enumerate(prepared) if doc.language is None]
        if unknown:
            detected = detect_documents([prepared[i].text for i in unknown], self.detector, self.document_languages)
            failed = [(prepared[i].id, found) for i, found in zip(unknown, detected) if found.language is None]
            if failed:
                shown = ", ".join(f"{doc_id!r}" + self._why_unknown(found) for doc_id, found in failed[:5])
                raise ValueError(f"cannot tell the language of {len(failed)} document(s): {shown}; give them a "
                                 "'language' (ISO 639-1)")
            for i, found in zip(unknown, detected):
                prepared[i].language = found.language
        return prepared

    def _why_unknown(self, found) -> str:
        served = self.detector.languages if self.detector is not None else frozenset()
        if self.document_languages == "served" and not served:
            return " (no language is served yet)"
        if found.best_guess is None:
            return ""
        if self.document_languages == "served" and found.best_guess not in served:
            return f" (looks like {found.best_guess}, which this collection does not serve yet)"
        detector = self.detector if self.document_languages == "served" else default_detector()
        return f" (best guess {found.best_guess}, confidence {found.confidence:.2f} < {detector.min_confidence})"

    def _vectors_for(self, documents: list[Document], stored: dict[str, StoredRow], batch_size: int, progress: bool) -> np.ndarray:
        """Passage vectors: reused from the store where the text is unchanged, encoded otherwise."""
        dim = self.dim
        vectors = np.zeros((len(documents), dim), dtype=np.float32)
        reuse = [i for i, doc in enumerate(documents) if doc.id in stored and stored[doc.id].text == doc.text]
        if reuse:
            try:
                with self._reading():
                    vectors[reuse] = self._store.vectors([stored[documents[i].id].key for i in reuse])
            except KeyError:  # replaced or deleted meanwhile by another writer: just encode them
                reuse = []
        reused = set(reuse)
        todo = [i for i in range(len(documents)) if i not in reused]
        todo.sort(key=lambda i: len(documents[i].text))  # similar lengths per batch: less padding
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="encode passages", unit="doc")
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            encoded = np.asarray(self.encoder.encode([documents[i].text for i in rows], "passage"), dtype=np.float32)
            if encoded.shape != (len(rows), dim):
                raise ValueError(f"encoder returned shape {encoded.shape}, expected {(len(rows), dim)}")
            vectors[rows] = encoded
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        return vectors

    def _read_statistics(self, writer: bool = False) -> LanguageStatistics:
        stats = LanguageStatistics(self.dim)
        for language, (count, total) in self._store.language_stats(writer=writer).items():
            stats.counts[language], stats.sums[language] = count, total
        return stats

    def _apply(self, written: WriteResult, vectors: np.ndarray) -> None:
        """Mirror a committed write in the shards and the statistics (caller holds the write lock).

        The write is already committed, so nothing here may raise: the shards and their files are caches
        of the store, and a failure only costs a repair (now, or on the next open)."""
        try:
            self._statistics = self._read_statistics(writer=True)
        except Exception:  # the store has them; the next write or open reads them again
            logger.exception("reading the language statistics failed")
        try:
            touched: set[str] = set()
            removed: dict[str, list[int]] = {}
            for key, language in written.removed:
                removed.setdefault(language, []).append(key)
            for language, keys in removed.items():
                if language in self._shards:
                    self._shards[language].remove(keys)
                    touched.add(language)
            added: dict[str, list[int]] = {}
            for row, (key, language) in enumerate(written.inserted):
                added.setdefault(language, []).append(row)
            for language, rows in added.items():
                shard = self._shards.get(language) or Shard.empty(self._shard_type, self.dim)
                shard.add(np.asarray([written.inserted[r][0] for r in rows], dtype=np.int64), vectors[rows])
                self._shards[language] = shard
                touched.add(language)
            for language in touched:
                if len(self._shards[language]) == 0:
                    del self._shards[language]
                elif self._shards[language].needs_rebuild():
                    self._shards[language] = self._build_shard(language)
            self._dirty |= touched
            self._follow_size()
        except Exception:
            logger.exception("updating the shards failed; rebuilding them from the store")
            try:
                self._load_shards()
            except Exception:
                logger.exception("rebuilding the shards failed; searches may miss this write until reopened")
        self._manifest["updated"] = now_iso()
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_SECONDS:
            try:
                self._persist()
                self._write_manifest()
            except Exception as exc:  # the dirty shards stay dirty: retried at the next checkpoint or close
                logger.warning("writing shard files to %s failed (%s); the store has the write", self.directory, exc)
                self._last_checkpoint = time.monotonic()

    def _follow_size(self) -> None:
        """``auto``: once the collection crosses a size threshold, rebuild every shard as the other type
        from the stored vectors (one time; ~40 s at 1M passages)."""
        total = self._live_total()
        wanted = shard_type_for(self._manifest["index_type"], total, self._shard_type)
        if wanted == self._shard_type:
            return
        logger.info("index %s: %d passages, shards %s -> %s (rebuilding from the stored vectors)",
                    self.directory, total, self._shard_type, wanted)
        self._shard_type = wanted
        self._shards = {language: self._build_shard(language) for language in self._shards}
        self._dirty |= set(self._shards)

    # --- reads -------------------------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        languages: Sequence[str] | None = None,
        per_language: int | None = None,
        calibrator: Calibrator | None = None,
        query_language: str | None = None,
    ) -> list[Hit]:
        """The ``k`` best documents for one query vector, all searched languages merged by score.

        ``languages``: shards to search (None = all). ``per_language``: at most that many hits per language.
        ``calibrator`` (with the query's language, which ``center`` needs): rank by calibrated cosine
        (``indexes.calibrated``); None or method ``none`` ranks by the raw cosine.
        """
        self._check_open()
        query = np.asarray(vector, dtype=np.float32)
        if query.ndim == 2 and query.shape[0] == 1:
            query = query[0]
        if query.shape != (self.dim,):
            raise ValueError(f"query vector must have shape ({self.dim},), got {tuple(np.shape(vector))}")
        if not np.all(np.isfinite(query)):
            raise ValueError("query vector contains NaN or infinity")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if per_language is not None and (not isinstance(per_language, (int, np.integer)) or per_language < 1):
            raise ValueError(f"per_language must be a positive integer or None, got {per_language!r}")
        if isinstance(languages, str):
            languages = [languages]
        wanted = None if languages is None else list(dict.fromkeys(normalize_language(code) for code in languages))
        calibrated = calibrator is not None and calibrator.method != "none"
        query = shifted_query(query, calibrator, query_language) if calibrated else np.ascontiguousarray(query.reshape(1, -1))
        depth = min(k, per_language) if per_language else k
        with self._reading(), single_threaded():
            scores, keys = [], []
            for language in (self._shards if wanted is None else wanted):
                shard = self._shards.get(language)
                if shard is not None:
                    shard_scores, shard_keys = (
                        search_shard(shard, language, query, depth, calibrator, self._norms) if calibrated
                        else shard.search(query, depth))
                    scores.append(shard_scores)
                    keys.append(shard_keys)
            if not scores:
                return []
            scores, keys = np.concatenate(scores), np.concatenate(keys)
            top = np.lexsort((keys, -scores))[:k]  # score desc, ties by insertion order
            rows = self._store.rows_by_key(keys[top])
        return [
            Hit(row.id, row.text, row.language, float(scores[i]), row.group, json.loads(row.metadata))
            for i in top
            if (row := rows.get(int(keys[i]))) is not None
        ]

    def search_text(self, query: str, k: int = 10, languages: Sequence[str] | None = None,
                    per_language: int | None = None) -> list[Hit]:
        """``search`` for a query text, embedded with the collection's encoder (as a "query")."""
        if self.encoder is None:
            raise RuntimeError("this collection was opened without an encoder; pass a vector to search()")
        return self.search(self.encoder.encode([query], "query")[0], k, languages, per_language)

    def get(self, id: str) -> Document | None:
        with self._reading():
            row = self._store.rows_by_id([id]).get(id)
        return row.document() if row is not None else None

    def statistics(self) -> LanguageStatistics:
        """The running per-language sums and counts of the stored vectors: what calibration estimates the
        collection's own language means from. A write replaces the object; it is never mutated."""
        with self._reading():
            return self._statistics

    def languages(self) -> dict[str, int]:
        """Documents per language."""
        with self._reading():
            return {language: len(shard) for language, shard in sorted(self._shards.items())}

    def groups(self) -> dict[str, list[str]]:
        """group -> ids of its documents (documents without a group are left out)."""
        with self._reading():
            return self._store.groups()

    def __len__(self) -> int:
        with self._reading():
            return self._live_total()

    def _live_total(self) -> int:
        """Documents in all shards (caller holds a lock)."""
        return sum(len(shard) for shard in self._shards.values())

    def documents(self) -> Iterator[Document]:
        """Every document, in insertion order (one consistent snapshot)."""
        self._check_open()
        return self._store.iter_documents()

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def index_type(self) -> str:
        """What the collection was asked for (auto | flat | hnsw | ivf)."""
        return self._manifest["index_type"]

    @property
    def shard_type(self) -> str:
        """What its shards are now: the index type, or for auto the type its size calls for."""
        return self._shard_type

    @property
    def manifest(self) -> dict:
        """Encoder fingerprint, dim, base model, precision, index type, created/updated, version and counts."""
        with self._reading():
            return self._manifest_snapshot()

    def _manifest_snapshot(self) -> dict:
        languages = {language: len(shard) for language, shard in sorted(self._shards.items())}
        return {
            **self._manifest,
            "version": self._store.version(),
            "documents": sum(languages.values()),
            "languages": languages,
            "groups": self._store.group_count(),
            "shard_type": self._shard_type,
            "shards": {language: shard.structure for language, shard in sorted(self._shards.items())},
        }

    # --- persistence -------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write changed shards and the manifest to disk now (close() does it too; it only makes the next
        open faster)."""
        self._check_writable()
        with self._rw.write():
            self._check_open()
            self._persist()
            self._write_manifest()

    def _persist(self) -> None:
        shard_dir = self.directory / SHARD_DIR
        for language in sorted(self._dirty):
            path = shard_dir / f"{language}.faiss"
            if language in self._shards:
                self._shards[language].save(path)
            elif path.exists():
                path.unlink()
        self._dirty.clear()
        self._last_checkpoint = time.monotonic()

    def _write_manifest(self) -> None:
        write_json_atomic(self.directory / MANIFEST_FILE, self._manifest_snapshot())

    def close(self) -> None:
        """Persist the shards and release the directory. Idempotent."""
        if self._closed:
            return
        with self._rw.write():
            if self._closed:
                return
            try:
                if not self.follower:
                    self._persist()
                    self._write_manifest()
            finally:
                self._closed = True
                self._store.close()
                if self._lock is not None:
                    self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the collection at {self.directory} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.follower:
            raise RuntimeError(f"this view of {self.directory} is a read-only follower; writes go to the index's writer")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The read lock, checked for open under it: close() takes the write lock, so it cannot close the
        store while a read is running, and a read that waited for close() fails cleanly. A follower first
        catches up with the writer's last commit."""
        self._check_open()
        if self.follower:
            self._catch_up()
        with self._rw.read():
            self._check_open()
            yield

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} documents{', follower' if self.follower else ''}"
        return f"Collection({str(self.directory)!r}, {self.index_type}, {state})"


def _total(stored: dict[str, np.ndarray]) -> int:
    return sum(len(keys) for keys in stored.values())


def check_vectors(vectors, count: int, dim: int) -> np.ndarray:
    """Precomputed passage vectors as the store keeps them: (count, dim) float32, finite, L2-normalised
    (the encoder contract); anything else is refused before a write."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (count, dim):
        raise ValueError(f"vectors must have shape ({count}, {dim}) (one per document), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("vectors contain NaN or infinity")
    norms = np.linalg.norm(array, axis=1)
    if count and np.max(np.abs(norms - 1.0)) > 1e-3:
        raise ValueError(f"vectors must be L2-normalised (norms from {norms.min():.4f} to {norms.max():.4f})")
    return array


def _same(doc: Document, row: StoredRow) -> bool:
    language = row.language if doc.language is None else doc.language
    return (doc.text, language, doc.group) == (row.text, row.language, row.group) and doc.metadata == json.loads(row.metadata)
