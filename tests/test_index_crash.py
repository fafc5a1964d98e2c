"""Crash safety: an ingest killed with SIGKILL at an arbitrary moment leaves a consistent index that a rerun
of the build completes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoder import OnnxEncoder
from indexes import Collection

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 30_000
CHUNK = 100
LANGUAGES = ("en", "de", "fi")

# Like the CLI, but writing the shard files after every transaction, so the kill can also land mid-checkpoint.
CHECKPOINTING_INGEST = """
import sys
import indexes.collection as collection_module
from encoder import OnnxEncoder
from indexes import Collection, read_jsonl
collection_module.CHECKPOINT_SECONDS = 0
model, source, out, chunk = sys.argv[1:5]
documents = list(read_jsonl(source))
collection = Collection.open(out, OnnxEncoder(model, precision="fp32", threads=1), index_type="hnsw")
for start in range(0, len(documents), int(chunk)):
    collection.add(documents[start : start + int(chunk)])
collection.close()
"""


def stored_count(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.Error:
        return 0  # not created yet


def kill_mid_ingest(command: list[str], database: Path, after: int) -> int:
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while stored_count(database) < after:
        if process.poll() is not None:
            pytest.fail(f"ingest ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("ingest too slow")
        time.sleep(0.02)
    time.sleep(np.random.default_rng().uniform(0, 0.05))  # land anywhere: encoding, committing, checkpointing
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return stored_count(database)


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "docs.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(TOTAL):
            row = {"id": f"doc-{i}", "text": f"passage {i} on subject {i % 97} from source {i % 13}",
                   "language": LANGUAGES[i % len(LANGUAGES)], "group": f"g{i // len(LANGUAGES)}"}
            handle.write(json.dumps(row) + "\n")
    return path


def check_consistent(index: Path, encoder: OnnxEncoder, expected: int) -> None:
    with Collection.open(index, encoder, index_type=None) as collection:
        assert len(collection) == expected
        per_language = {}
        for doc in collection.documents():
            per_language[doc.language] = per_language.get(doc.language, 0) + 1
        assert collection.languages() == dict(sorted(per_language.items()))
        assert collection.manifest["documents"] == expected
        hits = collection.search(encoder.encode(["passage on subject"], "query")[0], k=TOTAL)
        assert sorted(hit.id for hit in hits) == sorted(doc.id for doc in collection.documents())  # all searchable


@pytest.mark.parametrize("variant", ["cli-flat", "checkpointing-hnsw"])
def test_killed_ingest_reopens_consistent_and_a_rerun_completes_it(tmp_path, tiny_artifact, documents_file, variant):
    index = tmp_path / "index"
    if variant == "cli-flat":
        command = [sys.executable, "-m", "indexes", "build", "--model", str(tiny_artifact), "--input",
                   str(documents_file), "--out", str(index), "--precision", "fp32", "--chunk-size", str(CHUNK),
                   "--threads", "1"]
    else:
        command = [sys.executable, "-c", CHECKPOINTING_INGEST, str(tiny_artifact), str(documents_file), str(index),
                   str(CHUNK)]
    stored = kill_mid_ingest(command, index / "documents.sqlite3", after=10 * CHUNK)
    assert 0 < stored < TOTAL and stored % CHUNK == 0  # whole transactions only, never half a chunk

    encoder = OnnxEncoder(tiny_artifact, precision="fp32", threads=1)
    check_consistent(index, encoder, stored)

    rerun = subprocess.run([sys.executable, "-m", "indexes", "build", "--model", str(tiny_artifact), "--input",
                            str(documents_file), "--out", str(index), "--precision", "fp32", "--threads", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{TOTAL - stored} added, 0 replaced, {stored} unchanged" in rerun.stdout
    check_consistent(index, encoder, TOTAL)
