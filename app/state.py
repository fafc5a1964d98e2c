"""What the service holds while it runs: the encoder, the collection and whether they are ready.

Model and index load synchronously at startup, so a missing artifact or an index built with another
model stops the process with a clear message. Seeding and the warm-up run in a background thread: the
process answers ``/livez`` (and ``/readyz`` with 503 and the reason) meanwhile. A seed that completes
leaves ``seeded.json`` (seed path and sha256) in the index directory; without it (an interrupted seed) or
when the seed file changed, the next start seeds again, skipping documents already stored unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from app.batching import BatchingEncoder
from app.config import Settings
from app.overload import Gate
from app.telemetry import Telemetry, TimedEncoder
from app.calibration import detector_languages, load_source
from encoder.files import write_json_atomic
from indexes import Collection, Document, read_documents
from indexes.languages import KNOWN_LANGUAGES, LanguageDetector, NoLanguages, default_detector

logger = logging.getLogger("babelsearch")

SEED_CHUNK = 64  # documents per add() call while seeding: progress in /readyz, interruptible shutdown
SEED_MARKER = "seeded.json"  # written into the index directory once the whole seed collection is in


class StartupError(RuntimeError):
    """The configuration cannot be served (missing artifact, index built with another model, bad seed)."""


class ServiceState:
    def __init__(self, settings: Settings, telemetry: Telemetry, encoder=None, open_collection=None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._injected_encoder = encoder  # tests pass a hand-made encoder; production loads the artifact
        # open_collection(encoder) -> the collection to serve; None opens settings.index_dir as its writer.
        # app.cluster's search replicas pass one: a follower of the Writer's index whose writes go to the Writer.
        self._open_collection = open_collection
        self.encoder = None
        self.collection: Collection | None = None
        self.calibration = None  # encoder.calibration.CalibrationSource, once the model is loaded
        self.detector: LanguageDetector | NoLanguages | None = None  # the model's and the collection's languages
        self._seed_languages: set[str] = set()  # served from the start, before the seed is in
        self.reason = "starting"
        self.ready = False
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._seed_marker: dict | None = None  # what to write to SEED_MARKER once the seed is complete
        self.url: str | None = None  # where the server listens (set by `python -m app`), for the ready line
        # Counts cached after every write: /readyz and /metrics answer from them, never waiting on the index.
        self.documents = 0
        self.language_counts: dict[str, int] = {}
        # Encoder work is bounded by the encoder's own queue (BatchingEncoder, max_encoder_requests); audits
        # also rank the whole collection per query, so they have a gate of their own.
        self.audit_gate = Gate("audits", settings.max_concurrent_audits, "max_concurrent_audits")

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        self.reason = f"loading model from {settings.model_dir}"
        encoder = self._injected_encoder or self._load_encoder()
        # Everything encodes through one worker (app.batching): the routes, the collection's writes, the seed,
        # the warm-up. TimedEncoder inside it, so the encode metrics time real encoder calls (one per batch).
        self.encoder = BatchingEncoder(
            TimedEncoder(encoder, self.telemetry), max_pending=settings.max_encoder_requests,
            max_batch_texts=settings.max_encoder_batch, wait_s=settings.encoder_batch_wait_ms / 1000,
            on_batch=self.telemetry.observe_batch)
        self.telemetry.encoder_pending.set_function(lambda: self.encoder.pending)
        self.encoder.start()
        logger.info("threads: one encoder worker with %s ONNX Runtime intra-op threads (BABELSEARCH_THREADS); "
                    "FAISS/OpenMP %s per search thread (OMP_NUM_THREADS)", settings.threads or "one per core",
                    os.environ.get("OMP_NUM_THREADS", "the OpenMP default"))
        try:
            self._open_index()
        except BaseException:
            self.encoder.stop()  # no worker thread outlives a failed start
            raise

    def _open_index(self) -> None:
        settings = self.settings
        self.reason = f"opening index at {settings.index_dir}"
        try:
            self.collection = (self._open_collection(self.encoder) if self._open_collection is not None else
                               Collection.open(settings.index_dir, self.encoder, index_type=settings.index_type))
        except Exception as exc:  # IndexMismatchError among others: the message says which model built it
            raise StartupError(f"cannot open the index at {settings.index_dir}: {exc}") from exc
        self.calibration = load_source(settings, self.encoder)
        try:
            seed = self._read_seed() if settings.seed_collection else None
        except StartupError:
            self.collection.close()  # releases the index directory's lock
            raise
        self._seed_languages = {doc.language for doc in seed or [] if doc.language}
        self.refresh_counts()
        if settings.warm_up:
            # Here, before the port opens: lingua holds the GIL while it loads its models (~3 s for 12
            # languages), which in the background would stall every request, /livez and /readyz included.
            self.reason = "loading the language detector"
            self._warm_up_detector()
        # Seeding and warm-up run in the background: /livez answers meanwhile, /readyz says what is going on.
        self._worker = threading.Thread(target=self._prepare, args=(seed or [],), name="prepare", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join()  # its encode call, if any, completes first: the encoder worker still runs
        if isinstance(self.encoder, BatchingEncoder):
            self.encoder.stop()
        if self.collection is not None:
            self.collection.close()
        self.ready = False
        self.reason = "shut down"
        self.telemetry.ready.set(0)

    def _load_encoder(self):
        from encoder import OnnxEncoder

        settings = self.settings
        try:
            return OnnxEncoder(settings.model_dir, settings.precision, threads=settings.threads or None)
        except (FileNotFoundError, ValueError) as exc:
            raise StartupError(f"cannot load the model artifact at {settings.model_dir}: {exc}") from exc

    def _read_seed(self) -> list[Document] | None:
        """The seed documents, or None when this seed file (same path and content) was already fully ingested."""
        path = Path(self.settings.seed_collection)
        if not path.is_file():
            raise StartupError(f"seed collection not found: {path} (BABELSEARCH_SEED_COLLECTION)")
        marker = {"seed_collection": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        if self._stored_seed_marker() == marker:
            return None
        try:
            documents = list(read_documents(path))  # JSONL, or Parquet with the ray extra
        except Exception as exc:
            raise StartupError(f"cannot read the seed collection {path}: {exc}") from exc
        self._seed_marker = marker
        return documents

    def _stored_seed_marker(self) -> dict | None:
        try:
            return json.loads((self.collection.directory / SEED_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _prepare(self, seed: list[Document]) -> None:
        stage = "seed ingest"
        try:
            if seed:
                self._ingest_seed(seed)
            stage = "warm-up"
            if self.settings.warm_up and not self._stop.is_set():
                self._warm_up()
        except Exception as exc:  # stays alive and says why it is not ready; /readyz carries the reason
            logger.exception("%s failed", stage)
            self.reason = f"{stage} failed: {exc}"
            return
        if not self._stop.is_set():
            self._mark_ready()

    def _ingest_seed(self, documents: list[Document]) -> None:
        label = f"ingesting seed collection {self.settings.seed_collection}"
        self.reason = f"{label} (0/{len(documents)} documents)"
        for start in range(0, len(documents), SEED_CHUNK):
            if self._stop.is_set():
                return  # no marker: the next start completes the seed
            # skip_unchanged: after an interrupted seed, documents already stored are not encoded again
            try:
                self.collection.add(documents[start : start + SEED_CHUNK], skip_unchanged=True)
            finally:
                self.refresh_counts()
            self.reason = f"{label} ({min(start + SEED_CHUNK, len(documents))}/{len(documents)} documents)"
        write_json_atomic(self.collection.directory / SEED_MARKER, self._seed_marker)
        logger.info("seeded %d documents from %s", len(documents), self.settings.seed_collection)

    def _warm_up(self) -> None:
        """Pay the one-off costs before the first user does: ONNX Runtime allocates on its first run (the
        language detector's models were loaded at start; a language the seed added loads here)."""
        self.reason = "warming up (language detector and encoder)"
        self._warm_up_detector()
        self.encoder.encode(["warm-up"], "query")
        logger.info("warm-up done")

    def _warm_up_detector(self) -> None:
        # Not the all-language detector (nothing served yet, detection=all): ~1.3 GB and 13-21 s, which only
        # a document without a language should cost.
        if self.detector.languages and self.detector.languages != KNOWN_LANGUAGES:
            self.detector.warm_up()

    def _mark_ready(self) -> None:
        self.refresh_counts()
        # The line a newcomer waits for (README, "Using the service"); logged before /readyz turns 200.
        logger.info("ready on %s: %d documents, model %s", self.url or "this process", self.documents,
                    self.model_name)
        self.ready = True
        self.reason = "ready"
        self.telemetry.ready.set(1)

    def refresh_counts(self) -> None:
        """Re-read the document counts that /readyz, /metrics and / report (call after every write), and
        let the query language detector know a language the collection just gained. (Documents without a
        language are labelled among the served languages or all of them: settings.detection.)"""
        languages = self.collection.languages()
        self.documents, self.language_counts = sum(languages.values()), languages
        self.telemetry.set_documents(languages)
        wanted = detector_languages(self.calibration, set(languages) | self._seed_languages, self.settings.languages)
        if not wanted:
            # Nothing known yet (a model without statistics, an empty collection). detection=all: every
            # language lingua has, with the lower threshold measured for that (documents label themselves
            # the same way); detection=served: nothing to choose from, every text is unknown.
            if self.detector is None:
                self.detector = default_detector() if self.settings.detection == "all" else NoLanguages()
        elif self.detector is None or (self.detector.languages in (frozenset(), KNOWN_LANGUAGES)
                                       and self.detector.languages != wanted):
            self.detector = LanguageDetector(wanted)  # the first languages known
        elif not wanted <= self.detector.languages:
            self.detector = self.detector.with_languages(wanted)
        self.collection.detector = self.detector if wanted else None
        self.collection.document_languages = self.settings.detection

    # --- helpers for the routes --------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The id the API reports for the model: the artifact directory's name (e.g. ``e5-small-base``)."""
        directory = getattr(self.encoder, "artifact_dir", None) if self.encoder is not None else None
        return Path(str(directory)).name if directory else "unloaded" if self.encoder is None else "model"
