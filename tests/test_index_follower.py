"""Followers (``Collection.open_follower``): read-only views of an index another process writes, as search
replicas use them. A read that starts after a write returned sees it; a writer killed mid-write leaves the
follower on the last committed state; precomputed vectors (distributed builds) are checked."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexes import Collection, Document

ROOT = Path(__file__).resolve().parents[1]
DIM = 16


class HashEncoder:
    """Deterministic unit vectors per text: plumbing, not meaning."""

    precision = "fp32"
    dim = DIM
    fingerprint = "hash-16"

    def encode(self, texts, kind):
        rows = [np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
                .normal(size=DIM) for text in texts]
        array = np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM)
        return array / np.linalg.norm(array, axis=1, keepdims=True)


def documents(prefix: str, count: int, language: str = "en") -> list[Document]:
    return [Document(f"{prefix}{i}", f"{prefix} passage number {i}", language) for i in range(count)]


def top_id(collection: Collection, text: str) -> str:
    return collection.search(HashEncoder().encode([text], "passage")[0], k=1)[0].id


@pytest.fixture
def writer(tmp_path):
    collection = Collection.open(tmp_path / "index", HashEncoder())
    collection.add(documents("seed", 12) + documents("graine", 5, "fr"))
    yield collection
    collection.close()


def test_a_follower_sees_every_write_that_returned_before_its_read(writer):
    follower = Collection.open_follower(writer.directory, HashEncoder())
    try:
        assert follower.follower and follower.languages() == {"en": 12, "fr": 5}
        for i in range(5):
            writer.add([Document(f"new{i}", f"brand new passage {i}", "de")])
            assert top_id(follower, f"brand new passage {i}") == f"new{i}"  # the very next read
        writer.delete(["seed0", "graine1"])
        writer.add([Document("seed1", "seed passage number 1, edited", "en")])  # a replacement: new key
        assert follower.languages() == writer.languages() == {"de": 5, "en": 11, "fr": 4}
        assert follower.get("seed0") is None and follower.get("seed1").text.endswith("edited")
        assert top_id(follower, "seed passage number 1, edited") == "seed1"
        assert follower.statistics().counts == writer.statistics().counts
        np.testing.assert_allclose(follower.statistics().sums["en"], writer.statistics().sums["en"], atol=1e-9)
        assert follower.manifest["version"] == writer.manifest["version"]
    finally:
        follower.close()


def test_a_follower_refuses_writes_and_leaves_the_files_alone(writer):
    writer.checkpoint()
    before = {p: p.stat().st_mtime_ns for p in writer.directory.rglob("*") if p.is_file() and "sqlite" not in p.name}
    follower = Collection.open_follower(writer.directory, HashEncoder())
    try:
        for write in (lambda: follower.add(documents("x", 1)), lambda: follower.delete(["seed1"]), follower.checkpoint):
            with pytest.raises(RuntimeError, match="read-only follower"):
                write()
        assert follower.refresh() is False  # nothing new
    finally:
        follower.close()
    after = {p: p.stat().st_mtime_ns for p in writer.directory.rglob("*") if p.is_file() and "sqlite" not in p.name}
    assert after == before
    writer.add(documents("later", 2))  # the writer still owns the directory
    assert len(writer) == 19


def test_a_follower_opened_with_another_encoder_is_refused(writer):
    class Other(HashEncoder):
        fingerprint = "another-model"

    with pytest.raises(ValueError, match="built with encoder hash-16"):
        Collection.open_follower(writer.directory, Other())


def test_a_follower_follows_an_index_type_change_and_a_reopened_writer(writer, tmp_path):
    follower = Collection.open_follower(writer.directory, HashEncoder())
    try:
        writer.close()
        reopened = Collection.open(writer.directory, HashEncoder(), index_type="hnsw")
        try:
            reopened.add(documents("after", 3, "ru"))
            assert follower.languages() == {"en": 12, "fr": 5, "ru": 3}
            assert follower.index_type == "hnsw"
            assert top_id(follower, "after passage number 2") == "after2"
        finally:
            reopened.close()
    finally:
        follower.close()


WRITER_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from tests.test_index_follower import HashEncoder, documents
from indexes import Collection
collection = Collection.open({index!r}, HashEncoder())
i = 0
while True:  # one committed write after another, until killed
    collection.add(documents(f"w{{i}}-", 50))
    print(i, flush=True)
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_the_follower_on_a_committed_state(tmp_path):
    index = tmp_path / "index"
    Collection.open(index, HashEncoder()).close()
    process = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT.format(root=str(ROOT), index=str(index))],
                               stdout=subprocess.PIPE, text=True)
    follower = None
    try:
        assert process.stdout.readline().strip() == "0"
        follower = Collection.open_follower(index, HashEncoder())
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline and len(seen) < 5:
            count = len(follower)
            assert count % 50 == 0  # whole writes only, never half of one
            if not seen or count > seen[-1]:
                seen.append(count)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        final = len(follower)
        assert final % 50 == 0 and final >= seen[-1]
        assert sorted(follower.languages().values()) == [final]
        # every committed document is searchable, with its own vector
        last = f"w{final // 50 - 1}-49"
        assert top_id(follower, f"{last[:last.index('-') + 1]} passage number 49") == last
    finally:
        if process.poll() is None:
            process.kill()
        if follower is not None:
            follower.close()
    with Collection.open(index, HashEncoder()) as reopened:  # the writer's lock died with it
        assert len(reopened) == final


def test_precomputed_vectors_are_stored_as_given_and_checked(tmp_path):
    with Collection.open(tmp_path / "index", HashEncoder()) as collection:
        docs = documents("v", 4)
        vectors = HashEncoder().encode([f"other text {i}" for i in range(4)], "passage")
        result = collection.add(docs, vectors=vectors)
        assert result["added"] == 4
        hit = collection.search(vectors[2], k=1)[0]
        assert hit.id == "v2" and hit.score == pytest.approx(1.0, abs=1e-6)
        for bad, message in [(vectors[:3], "shape"), (vectors * 2, "L2-normalised"),
                             (np.full((4, DIM), np.nan, np.float32), "NaN")]:
            with pytest.raises(ValueError, match=message):
                collection.add(documents("bad", 4), vectors=bad)
        assert len(collection) == 4  # nothing of the refused writes
        # a repeated id: the last row wins, with its own vector
        fresh = HashEncoder().encode(["a fresh vector"], "passage")
        collection.add([docs[0], Document("v0", "v passage number 0", "en")], vectors=np.vstack([vectors[3], fresh[0]]))
        assert collection.search(fresh[0], k=1)[0].id == "v0"
        assert [hit.id for hit in collection.search(vectors[3], k=4) if hit.score > 0.999] == ["v3"]


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_follower_catches_up_from_the_log_as_a_full_listing_would(tmp_path, index_type, monkeypatch):
    rng = np.random.default_rng(7)
    with Collection.open(tmp_path / "index", HashEncoder(), index_type=index_type) as writer:
        writer.add(documents("seed", 30) + documents("graine", 20, "fr"))
        follower = Collection.open_follower(writer.directory, HashEncoder())
        full_listings = []
        follow_all = follower._follow_all
        monkeypatch.setattr(follower, "_follow_all", lambda manifest: (full_listings.append(1), follow_all(manifest)))
        try:
            for step in range(40):
                ids = [doc.id for doc in writer.documents()]
                action = rng.integers(3)
                if action == 0:  # new documents, some in a new language
                    writer.add(documents(f"s{step}-", int(rng.integers(1, 5)), ["en", "fr", "de"][step % 3]))
                elif action == 1 and ids:  # deletes
                    writer.delete(list(rng.choice(ids, size=min(3, len(ids)), replace=False)))
                elif ids:  # a replacement: same id, new text, new key
                    doc_id = str(rng.choice(ids))
                    writer.add([Document(doc_id, f"rewritten at step {step}", writer.get(doc_id).language)])
                assert follower.languages() == writer.languages()
                query = HashEncoder().encode([f"s{step}- passage number 0"], "passage")[0]
                assert [(h.id, round(h.score, 5)) for h in follower.search(query, k=5)] == \
                       [(h.id, round(h.score, 5)) for h in writer.search(query, k=5)]
            assert full_listings == []  # every catch-up came from the log
            assert follower.statistics().counts == writer.statistics().counts
        finally:
            follower.close()


def test_a_follower_behind_the_kept_log_lists_every_key(tmp_path, monkeypatch):
    from indexes import store as store_module

    monkeypatch.setattr(store_module, "REMOVALS_KEPT", 10)
    with Collection.open(tmp_path / "index", HashEncoder()) as writer:
        writer.add(documents("seed", 5))
        follower = Collection.open_follower(writer.directory, HashEncoder())
        try:
            assert len(follower) == 5
            for i in range(1000):  # version 1000 prunes the removals older than 990
                writer.add([Document("churn", f"churn text {i}", "de")])
            writer.delete(["seed0"])
            assert follower.languages() == writer.languages() == {"de": 1, "en": 4}
            assert top_id(follower, "churn text 999") == "churn"
        finally:
            follower.close()
