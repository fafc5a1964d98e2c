"""The index layer: per-language FAISS shards over the SQLite store, on the tiny exported model (plumbing,
not semantic quality) and real lingua language detection."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from encoder import OnnxEncoder
from indexes import (
    KNOWN_LANGUAGES,
    Collection,
    Document,
    IndexBusyError,
    IndexMismatchError,
    detect_language,
    read_jsonl,
)
from indexes import shards as shards_module
from indexes.languages import LanguageDetector

ROOT = Path(__file__).resolve().parents[1]

# Short sentences with their language: explicit codes keep most tests free of language detection.
SENTENCES = {
    "en": ["How many people live in Berlin?", "The river flows slowly through the old town.",
           "Photosynthesis turns light into chemical energy.", "The train to Paris leaves at nine."],
    "de": ["Wie viele Menschen leben in Berlin?", "Der Fluss fließt langsam durch die Altstadt.",
           "Photosynthese wandelt Licht in chemische Energie um."],
    "fr": ["Combien de personnes vivent à Berlin ?", "La rivière traverse lentement la vieille ville."],
    "ru": ["Сколько людей живёт в Берлине?", "Река медленно течёт через старый город.",
           "Фотосинтез превращает свет в энергию."],
    "zh": ["柏林有多少人口？", "河水缓缓流过古城。", "光合作用把光能转化为化学能。"],
    "ar": ["كم عدد سكان برلين؟", "يتدفق النهر ببطء عبر المدينة القديمة."],
    "hi": ["बर्लिन में कितने लोग रहते हैं?", "नदी पुराने शहर से धीरे-धीरे बहती है।"],
    "th": ["กรุงเบอร์ลินมีประชากรเท่าไร", "แม่น้ำไหลช้าๆ ผ่านเมืองเก่า"],
}
QUERIES = ["people in Berlin", "a slow river", "light and energy", "Berlin", "станция", "河流"]


def corpus(extra: int = 0) -> list[Document]:
    docs = [
        Document(f"{language}-{i}", text, language, group=f"g{i}", metadata={"n": i})
        for language, texts in SENTENCES.items()
        for i, text in enumerate(texts)
    ]
    docs += [Document(f"en-x{i}", f"note {i} about topic {i % 7} near place {i % 5}", "en") for i in range(extra)]
    return docs


def write_jsonl(path: Path, documents: list[Document]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for doc in documents:
            row = {"id": doc.id, "text": doc.text, "language": doc.language, "group": doc.group, "metadata": doc.metadata}
            handle.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def encoder(tiny_artifact) -> OnnxEncoder:
    return OnnxEncoder(tiny_artifact, precision="fp32", threads=1)


@pytest.fixture()
def collection(tmp_path, encoder):
    with Collection.open(tmp_path / "index", encoder) as opened:
        opened.add(corpus())
        yield opened


def query_vectors(encoder, texts=QUERIES) -> np.ndarray:
    return encoder.encode(texts, "query")


def ranking(hits) -> list[tuple[str, float]]:
    return [(hit.id, round(hit.score, 5)) for hit in hits]


def assert_same_hits(hits, expected) -> None:
    """Same scores in the same order, and the same ids (tied scores may come in any order)."""
    assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    groups = lambda found: sorted((round(hit.score, 5), hit.id) for hit in found if hit.score > found[-1].score + 1e-5)
    assert groups(hits) == groups(expected)


# --- building, persistence, upsert, delete -------------------------------------------------------------------


def test_build_from_jsonl_persist_and_reopen_gives_same_results(tmp_path, encoder):
    documents = list(read_jsonl(write_jsonl(tmp_path / "docs.jsonl", corpus(extra=30))))
    queries = query_vectors(encoder)
    with Collection.open(tmp_path / "index", encoder) as collection:
        result = collection.add(documents, batch_size=8)
        assert result["added"] == len(documents) and result["replaced"] == 0
        assert result["languages"]["en"] == len(SENTENCES["en"]) + 30
        before = [ranking(collection.search(q, k=7)) for q in queries]
        assert collection.manifest["documents"] == len(documents)
    assert sorted(p.name for p in (tmp_path / "index" / "shards").iterdir()) == sorted(f"{l}.faiss" for l in SENTENCES)
    with Collection.open(tmp_path / "index", encoder) as reopened:
        assert len(reopened) == len(documents)
        assert [ranking(reopened.search(q, k=7)) for q in queries] == before
        assert reopened.get("de-1") == Document("de-1", SENTENCES["de"][1], "de", "g1", {"n": 1})
        assert reopened.languages() == {language: len(texts) + (30 if language == "en" else 0)
                                        for language, texts in SENTENCES.items()}
        assert reopened.groups()["g0"] == [f"{language}-0" for language in SENTENCES]
        assert [doc.id for doc in reopened.documents()] == [doc.id for doc in documents]
        manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
        assert manifest["encoder_fingerprint"] == encoder.fingerprint and manifest["dim"] == encoder.dim
        assert manifest["index_type"] == "auto" and manifest["shard_type"] == "flat" and manifest["documents"] == len(documents)


def test_upsert_replaces_document_and_moves_it_between_language_shards(collection, encoder):
    size = len(collection)
    result = collection.add([Document("en-0", "Wie spät ist es in Tokio?", "de", metadata={"v": 2})])
    assert result == {"added": 0, "replaced": 1, "unchanged": 0, "languages": {"de": 1}}
    assert len(collection) == size
    assert collection.get("en-0") == Document("en-0", "Wie spät ist es in Tokio?", "de", None, {"v": 2})
    assert collection.languages()["en"] == len(SENTENCES["en"]) - 1
    vector = encoder.encode(["Wie spät ist es in Tokio?"], "passage")[0]
    top = collection.search(vector, k=1)[0]
    assert (top.id, top.language, top.metadata) == ("en-0", "de", {"v": 2}) and top.score == pytest.approx(1, abs=1e-5)
    assert "en-0" not in [hit.id for hit in collection.search(vector, k=100, languages=["en"])]
    # Same text again: kept (skip_unchanged) or rewritten without re-encoding; the vector is the same.
    assert collection.add([Document("en-0", "Wie spät ist es in Tokio?", "de", metadata={"v": 2})],
                          skip_unchanged=True)["unchanged"] == 1
    assert collection.add([Document("en-0", "Wie spät ist es in Tokio?", "de", metadata={"v": 3})])["replaced"] == 1
    assert collection.search(vector, k=1)[0].metadata == {"v": 3}


def test_repeated_id_in_one_call_keeps_the_last(collection):
    result = collection.add([Document("dup", "first text", "en"), Document("dup", "second text", "en")])
    assert result["added"] == 1 and collection.get("dup").text == "second text"


def test_delete_removes_from_search_and_store(tmp_path, encoder):
    with Collection.open(tmp_path / "index", encoder) as collection:
        collection.add(corpus())
        size = len(collection)
        assert collection.delete(["de-0", "zh-1", "missing", "de-0"]) == 2
        assert collection.delete(["missing"]) == 0
        assert len(collection) == size - 2 and collection.get("de-0") is None
        everything = [hit.id for hit in collection.search(query_vectors(encoder)[0], k=1000)]
        assert len(everything) == size - 2 and not {"de-0", "zh-1"} & set(everything)
    with Collection.open(tmp_path / "index", encoder) as reopened:
        assert len(reopened) == size - 2 and reopened.get("zh-1") is None
        assert "de-0" not in [hit.id for hit in reopened.search(query_vectors(encoder)[0], k=1000)]
        assert reopened.delete([doc.id for doc in reopened.documents()]) == size - 2
        assert len(reopened) == 0 and reopened.search(query_vectors(encoder)[0], k=5) == []
    assert not list((tmp_path / "index" / "shards").iterdir())


# --- search semantics ------------------------------------------------------------------------------------


def test_language_filter_quota_and_k_larger_than_collection(collection, encoder):
    query = query_vectors(encoder)[0]
    hits = collection.search(query, k=100, languages=["de", "ZH"])
    assert {hit.language for hit in hits} == {"de", "zh"} and len(hits) == len(SENTENCES["de"]) + len(SENTENCES["zh"])
    assert ranking(collection.search(query, k=100, languages="ru")) == ranking(collection.search(query, k=100, languages=["ru"]))
    assert collection.search(query, k=5, languages=["ko"]) == []  # known code, no documents
    assert collection.search(query, k=5, languages=[]) == []
    quota = collection.search(query, k=100, per_language=1)
    assert sorted(hit.language for hit in quota) == sorted(SENTENCES)
    everything = collection.search(query, k=10_000)
    assert len(everything) == len(collection)
    # The quota keeps the best hit of each language, in the global order.
    best = {}
    for hit in everything:
        best.setdefault(hit.language, hit.id)
    assert [hit.id for hit in quota] == [hit.id for hit in everything if best[hit.language] == hit.id]
    two = collection.search(query, k=6, per_language=2)
    assert len(two) == 6 and max(np.unique([h.language for h in two], return_counts=True)[1]) <= 2
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        collection.search(query, languages=["xx"])
    with pytest.raises(ValueError, match="shape"):
        collection.search(query[:5])
    with pytest.raises(ValueError, match="k must be"):
        collection.search(query, k=0)


def test_merged_ranking_equals_brute_force_over_all_vectors(tmp_path, encoder):
    documents = corpus(extra=60)
    passages = encoder.encode([doc.text for doc in documents], "passage")
    with Collection.open(tmp_path / "index", encoder) as collection:
        collection.add(documents, batch_size=16)
        for query in query_vectors(encoder):
            scores = passages @ query
            for k in (1, 10, len(documents)):
                hits = collection.search(query, k=k)
                expected = np.sort(scores)[::-1][:k]
                assert [hit.score for hit in hits] == pytest.approx(expected.tolist(), abs=1e-5)
                assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
                # ids agree wherever the score is not (near-)tied with a neighbour
                order = np.argsort(-scores, kind="stable")[:k]
                for position, index in enumerate(order):
                    gaps = np.abs(scores - scores[index])
                    if np.sum(gaps < 1e-5) == 1:
                        assert hits[position].id == documents[index].id


def test_hnsw_gives_the_same_top_hits_as_flat(tmp_path, encoder):
    documents = corpus(extra=100)  # small: every shard is below efSearch, so the graph search is exhaustive
    with Collection.open(tmp_path / "flat", encoder, "flat") as flat, \
            Collection.open(tmp_path / "hnsw", encoder, "hnsw") as hnsw:
        flat.add(documents, batch_size=64)
        hnsw.add(documents, batch_size=64)
        assert set(hnsw.manifest["shards"].values()) == {"hnsw"}

        def same_top_hits():
            for query in query_vectors(encoder):
                for k in (5, 10_000):
                    assert_same_hits(hnsw.search(query, k=k), flat.search(query, k=k))

        same_top_hits()
        # HNSW cannot remove vectors: deleted ones stay in the graph, filtered out of results...
        for collection in (flat, hnsw):
            assert collection.delete([f"en-x{i}" for i in range(60)]) == 60
        assert hnsw._shards["en"].stale and len(hnsw) == len(flat) == len(documents) - 60
        same_top_hits()
        # ...until they are too many, then the shard is rebuilt from the store.
        for collection in (flat, hnsw):
            assert collection.delete([f"en-x{i}" for i in range(60, 70)]) == 10
        assert not hnsw._shards["en"].stale and len(hnsw) == len(documents) - 70
        same_top_hits()
    with Collection.open(tmp_path / "hnsw", encoder, index_type=None) as reopened:
        assert reopened.index_type == "hnsw" and len(reopened) == len(documents) - 70
    with Collection.open(tmp_path / "hnsw", encoder) as reopened:  # the default keeps the recorded type too
        assert reopened.index_type == "hnsw" and set(reopened.manifest["shards"].values()) == {"hnsw"}
    assert json.loads((tmp_path / "hnsw" / "manifest.json").read_text())["index_type"] == "hnsw"
    with Collection.open(tmp_path / "new", encoder) as new:  # ...and a new collection is auto (flat while small)
        assert new.index_type == "auto" and new.shard_type == "flat"


def test_ivf_trains_on_big_shards_and_stays_exact_on_small_ones(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(shards_module, "IVF_MIN_SIZE", 300)
    documents = corpus(extra=600)
    with Collection.open(tmp_path / "ivf", encoder, "ivf") as ivf, Collection.open(tmp_path / "flat", encoder) as flat:
        ivf.add(documents)
        flat.add(documents)
        assert ivf.manifest["shards"]["en"] == "ivf" and ivf.manifest["shards"]["de"] == "flat"
        overlap = []
        for query in query_vectors(encoder):
            assert len(ivf.search(query, k=10_000)) == len(documents)
            overlap.append(len({h.id for h in ivf.search(query, k=10)} & {h.id for h in flat.search(query, k=10)}))
        assert np.mean(overlap) >= 8
        assert ivf.delete([f"en-x{i}" for i in range(10)]) == 10
        assert len(ivf.search(query_vectors(encoder)[0], k=10_000)) == len(documents) - 10
    # k beyond an IVF shard's size probes every list and returns each live vector once, best first
    shard = ivf._shards["en"]
    assert shard.structure == "ivf"
    query = np.ascontiguousarray(query_vectors(encoder)[:1])
    scores, keys = shard.search(query, 10**6)
    assert len(keys) == len(shard) == len(set(keys.tolist())) and np.all(np.diff(scores) <= 1e-6)
    with Collection.open(tmp_path / "ivf", encoder, "flat") as converted:  # another type: rebuilt from the store
        assert set(converted.manifest["shards"].values()) == {"flat"} and converted.index_type == "flat"
        assert len(converted) == len(documents) - 10


def test_auto_switches_every_shard_to_ivf_by_the_collections_total_and_back_well_below(tmp_path, encoder, monkeypatch):
    # thresholds scaled down 1000x: flat up to 300 passages in all, ivf (per shard from 100) above, flat below 200
    monkeypatch.setattr(shards_module, "AUTO_IVF_FROM", 300)
    monkeypatch.setattr(shards_module, "AUTO_FLAT_BELOW", 200)
    monkeypatch.setattr(shards_module, "IVF_MIN_SIZE", 100)
    many = [Document(f"{language}-y{i}", f"{language} note {i} on topic {i % 9}", language)
            for language in ("de", "fr") for i in range(140)]
    with Collection.open(tmp_path / "auto", encoder) as auto:
        auto.add(many[:140] + many[140:250])  # 250 in all: each shard would be big enough for ivf, yet flat
        assert auto.index_type == "auto" and set(auto.manifest["shards"].values()) == {"flat"}
        auto.add(many[250:] + corpus())  # 280 + 21 = 301: every shard rebuilt once, ivf where it is big enough
        assert auto.shard_type == "ivf" and auto.manifest["shards"]["de"] == "ivf" and auto.manifest["shards"]["en"] == "flat"
        assert len(auto.search(query_vectors(encoder)[0], k=10_000)) == len(auto) == 301
        auto.delete([doc.id for doc in many[:60]])  # 241: still ivf (no rebuild back and forth near the threshold)
        assert auto.shard_type == "ivf"
    with Collection.open(tmp_path / "auto", encoder) as reopened:  # the state survives a reopen
        assert reopened.shard_type == "ivf" and reopened.manifest["shards"]["fr"] == "ivf"
        reopened.delete([doc.id for doc in many[60:110]])  # 191: flat again
        assert reopened.shard_type == "flat" and set(reopened.manifest["shards"].values()) == {"flat"}
        assert len(reopened.search(query_vectors(encoder)[0], k=10_000)) == 191


def test_searches_never_see_half_applied_writes(tmp_path, encoder):
    documents = corpus()
    query = query_vectors(encoder)[0]
    errors, seen = [], set()
    stop = threading.Event()
    with Collection.open(tmp_path / "index", encoder) as collection:
        collection.add([Document(d.id, d.text, d.language, metadata={"generation": 0}) for d in documents])

        def searcher():
            try:
                while not stop.is_set():
                    hits = collection.search(query, k=1000)
                    generations = {hit.metadata["generation"] for hit in hits}
                    if len(hits) != len(documents) or len(generations) != 1:
                        errors.append((len(hits), generations))
                    seen.update(generations)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=searcher) for _ in range(3)]
        for thread in threads:
            thread.start()
        for generation in range(1, 30):  # every add rewrites all languages in one transaction
            collection.add([Document(d.id, d.text, d.language, metadata={"generation": generation}) for d in documents])
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(seen) > 1


def test_close_while_searching_gives_results_or_the_closed_error(tmp_path, encoder):
    query = query_vectors(encoder)[0]
    collection = Collection.open(tmp_path / "index", encoder)
    collection.add(corpus())
    outcomes, started = [], threading.Barrier(4)

    def searcher():
        started.wait()
        while True:
            try:
                outcomes.append(len(collection.search(query, k=5)))
                collection.get("en-0")
                collection.groups()
            except Exception as exc:
                outcomes.append(exc)
                return

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    started.wait()
    collection.close()
    for thread in threads:
        thread.join()
    errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(errors) == 3 and all(type(e) is RuntimeError and "is closed" in str(e) for e in errors), errors
    assert all(outcome == 5 for outcome in outcomes if not isinstance(outcome, Exception))
    for read in (lambda: collection.search(query), lambda: collection.get("en-0"), collection.groups,
                 collection.languages, lambda: len(collection), lambda: collection.manifest,
                 collection.documents, lambda: collection.unchanged_ids(corpus()[:1])):
        with pytest.raises(RuntimeError, match="is closed"):
            read()
    store = collection._store  # no reader connection survives close() or is opened after it
    assert store.closed and store._readers == []
    with pytest.raises(RuntimeError, match="document store .* is closed"):
        store.version()
    with pytest.raises(RuntimeError, match="is closed"):
        list(store.iter_documents())
    assert store._readers == []


def test_failures_after_the_commit_do_not_fail_the_write(tmp_path, encoder, monkeypatch, caplog):
    from indexes import collection as collection_module
    from indexes.shards import Shard

    directory = tmp_path / "index"
    new = Document("en-new", "A brand new sentence about harbours.", "en")
    vector = encoder.encode([new.text], "passage")[0]
    with Collection.open(directory, encoder) as collection:
        collection.add(corpus())
        with monkeypatch.context() as patch:
            def broken(*args, **kwargs):
                raise OSError("disk full")

            patch.setattr(collection_module, "CHECKPOINT_SECONDS", 0.0)  # every write also checkpoints...
            patch.setattr(Shard, "save", broken)  # ...and writing shard files fails
            patch.setattr(collection_module, "write_json_atomic", broken)
            patch.setattr(Shard, "add", broken)  # updating the shard in memory fails too: rebuilt from the store
            assert collection.add([new])["added"] == 1
            assert collection.delete(["de-0"]) == 1
        assert "writing shard files" in caplog.text and "rebuilding them from the store" in caplog.text
        assert collection.get("en-new") == new and collection.get("de-0") is None
        assert collection.search(vector, k=1)[0].id == "en-new"
        assert "de-0" not in {hit.id for hit in collection.search(vector, k=100)}
        size = len(collection)
    with Collection.open(directory, encoder) as reopened:  # close() wrote what the failed checkpoints could not
        assert len(reopened) == size and reopened.search(vector, k=1)[0].id == "en-new"
        assert json.loads((directory / "manifest.json").read_text())["documents"] == size


def test_stale_shard_files_are_repaired_from_the_store(tmp_path, encoder):
    """A shard file older than the store (as after a crash) is brought up to date on open, not trusted."""
    directory = tmp_path / "index"
    documents = corpus(extra=40)
    with Collection.open(directory, encoder, "hnsw") as collection:
        collection.add(documents[:20])
    old_shards = tmp_path / "old-shards"
    shutil.copytree(directory / "shards", old_shards)
    with Collection.open(directory, encoder, "hnsw") as collection:
        collection.add(documents[20:])
        collection.delete([documents[0].id])
    shutil.rmtree(directory / "shards")
    shutil.copytree(old_shards, directory / "shards")
    (directory / "shards" / "zz.faiss").write_bytes(b"garbage")  # unknown language: removed
    with Collection.open(directory, encoder, index_type=None) as reopened:
        assert len(reopened) == len(documents) - 1
        hits = reopened.search(query_vectors(encoder)[0], k=1000)
        assert sorted(h.id for h in hits) == sorted(d.id for d in documents[1:])
    assert not (directory / "shards" / "zz.faiss").exists()


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (Document("", "text", "en"), "id must be a non-empty string"),
        (Document("a", "   ", "en"), "document 'a': text must be a non-empty string"),
        (Document("a", "text", "english"), "unknown language code 'english'"),
        (Document("a", "text", "xx"), "unknown language code 'xx'"),
        (Document("a", "text", "en", metadata={"when": object()}), "metadata is not JSON-serialisable"),
    ],
)
def test_bad_documents_are_rejected_and_nothing_is_written(collection, bad, message):
    size, version = len(collection), collection.manifest["version"]
    with pytest.raises(ValueError, match=message):
        collection.add([Document("good", "a good document", "en"), bad])
    assert len(collection) == size and collection.get("good") is None
    assert collection.manifest["version"] == version


def test_language_codes_are_normalised(collection):
    collection.add([Document("a", "text one", "EN"), Document("b", "texto dos", "es-MX"), Document("c", "文本", "zh_CN")])
    assert [collection.get(i).language for i in "abc"] == ["en", "es", "zh"]


def test_read_jsonl_accepts_good_rows_and_names_bad_ones(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"id": "a", "text": "Hello there", "language": "en", "group": "g", "metadata": {"url": "u"}}\n\n'
        '{"id": 7, "title": "Tokio", "text": "Eine Stadt", "language": "de"}\n', encoding="utf-8")
    assert list(read_jsonl(good)) == [
        Document("a", "Hello there", "en", "g", {"url": "u"}),
        Document("7", "Eine Stadt", "de", None, {"title": "Tokio"}),
    ]
    cases = {
        '{"id": "a", "text": "ok"}\n{"id": "b", "text": ""}\n': ":2: field 'text' is missing or empty",
        '{"id": "a", "text": "ok"}\n{"id": "b", "text": "y"\n': ":2: not valid JSON",
        '{"text": "ok"}\n': ":1: field 'id' is missing",
        '{"id": "a", "text": "ok", "lang": "en"}\n': ":1: unknown field 'lang'",
        '{"id": "a", "text": "ok", "language": "xx"}\n': ":1: field 'language': unknown language code 'xx'",
        '{"id": "a", "text": "ok", "metadata": [1]}\n': ":1: field 'metadata' must be an object",
        '[1, 2]\n': ":1: expected a JSON object",
    }
    for content, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=f"bad.jsonl{message}".replace("[", r"\[").replace("(", r"\(")):
            list(read_jsonl(path))
    with pytest.raises(FileNotFoundError, match="input file not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


# --- language detection (real lingua) -------------------------------------------------------------------------


def test_detect_language_on_short_texts():
    samples = {
        "en": "Where is the train station?",
        "de": "Wo ist der Bahnhof?",
        "fr": "Où se trouve la gare ?",
        "es": "¿Dónde está la estación de tren?",
        "fi": "Missä on rautatieasema?",
        "tr": "Tren istasyonu nerede?",
        "vi": "Nhà ga xe lửa ở đâu?",
        "ru": "Где находится вокзал?",
        "el": "Πού είναι ο σιδηροδρομικός σταθμός;",
        "ar": "أين محطة القطار؟",
        "hi": "रेलवे स्टेशन कहाँ है?",
        "th": "สถานีรถไฟอยู่ที่ไหน",
        "zh": "火车站在哪里？",
        "ja": "駅はどこですか？",
        "ko": "기차역이 어디에 있어요?",
    }
    # among the languages served (how the service detects queries): every one right
    restricted = LanguageDetector(samples)
    assert {language: restricted.detect(text).language for language, text in samples.items()} == \
        {language: language for language in samples}
    # among all 75 (how documents without a language are labelled): right, or unsure, never wrong
    detected = {language: detect_language(text) for language, text in samples.items()}
    assert all(found in (language, None) for language, found in detected.items()), detected
    assert sum(found == language for language, found in detected.items()) >= len(samples) - 3
    assert detect_language("12345 !!") is None and detect_language("   ") is None
    assert {"en", "zh", "fi", "sw"} <= KNOWN_LANGUAGES and "xx" not in KNOWN_LANGUAGES


def test_add_detects_missing_languages(collection):
    result = collection.add([Document("q1", "Wie viele Menschen leben in Hamburg?"), Document("q2", "東京には何人住んでいますか？")])
    assert result["languages"] == {"de": 1, "ja": 1}
    assert collection.get("q2").language == "ja"
    with pytest.raises(ValueError, match="cannot tell the language of 1 document.*'digits'"):
        collection.add([Document("digits", "12345")])
    assert collection.get("digits") is None


# --- binding to the encoder, opening --------------------------------------------------------------------------


class OtherDim:
    def __init__(self, encoder, dim):
        self.fingerprint, self.dim = encoder.fingerprint, dim

    def encode(self, texts, kind):
        return np.zeros((len(texts), self.dim), dtype=np.float32)


def test_index_refuses_an_encoder_with_another_fingerprint_or_dim(tmp_path, encoder, tiny_artifact):
    with Collection.open(tmp_path / "index", encoder) as collection:
        collection.add(corpus())
    with pytest.raises(IndexMismatchError, match="built with encoder .*-fp32.*loaded encoder is .*-int8"):
        Collection.open(tmp_path / "index", OnnxEncoder(tiny_artifact, precision="int8"))
    with pytest.raises(IndexMismatchError, match="dim 64"):
        Collection.open(tmp_path / "index", OtherDim(encoder, 64))
    with Collection.open(tmp_path / "index", None, index_type=None, create=False) as maintenance:
        assert len(maintenance) == len(corpus())  # no encoder: maintenance (delete, info) only
        with pytest.raises(RuntimeError, match="without an encoder"):
            maintenance.add([Document("a", "b", "en")])


def test_open_errors(tmp_path, encoder):
    with pytest.raises(FileNotFoundError, match="no index at"):
        Collection.open(tmp_path / "missing", encoder, create=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        Collection.open(tmp_path / "busy", encoder)
    with pytest.raises(ValueError, match="index_type must be one of"):
        Collection.open(tmp_path / "new", encoder, index_type="annoy")
    with Collection.open(tmp_path / "new", encoder):
        with pytest.raises(IndexBusyError, match="open in another process"):
            Collection.open(tmp_path / "new", encoder)
    closed = Collection.open(tmp_path / "new", encoder)
    closed.close()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.search(np.zeros(encoder.dim, dtype=np.float32))


# --- command line ------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexes", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_build_info_delete_and_errors(tmp_path, tiny_artifact):
    docs = write_jsonl(tmp_path / "docs.jsonl", corpus(extra=20))
    out = tmp_path / "index"
    built = run_cli("build", "--model", tiny_artifact, "--input", docs, "--out", out, "--index-type", "hnsw",
                    "--precision", "fp32", "--chunk-size", "7")
    assert built.returncode == 0, built.stderr
    total = len(corpus(extra=20))
    assert f"{total} added, 0 replaced, 0 unchanged" in built.stdout
    again = run_cli("build", "--model", tiny_artifact, "--input", docs, "--out", out, "--precision", "fp32")
    assert again.returncode == 0 and f"0 added, 0 replaced, {total} unchanged" in again.stdout

    info = run_cli("info", out)
    assert info.returncode == 0, info.stderr
    manifest = json.loads(info.stdout)
    assert manifest["documents"] == total and manifest["index_type"] == "hnsw" and manifest["dim"] == 32
    assert manifest["languages"]["en"] == len(SENTENCES["en"]) + 20

    with Collection.open(out, None, index_type=None):  # a service has it open: info reads, delete refuses
        assert json.loads(run_cli("info", out).stdout)["documents"] == total
        busy = run_cli("delete", out, "de-0")
        assert busy.returncode == 1 and "is open in another process" in busy.stderr

    deleted = run_cli("delete", out, "de-0", "nope")
    assert deleted.returncode == 1 and "deleted 1 of 2" in deleted.stdout and "not found: nope" in deleted.stderr
    assert json.loads(run_cli("info", out).stdout)["documents"] == total - 1

    mismatch = run_cli("build", "--model", tiny_artifact, "--input", docs, "--out", out, "--precision", "int8")
    assert mismatch.returncode == 1 and "error: the index at" in mismatch.stderr and "built with encoder" in mismatch.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok", "text": "fine", "language": "en"}\n{"id": "b", "text": "x", "language": "klingon"}\n')
    failed = run_cli("build", "--model", tiny_artifact, "--input", bad, "--out", tmp_path / "other")
    assert failed.returncode == 1 and "bad.jsonl:2: field 'language'" in failed.stderr
    assert not (tmp_path / "other").exists()  # checked before anything was created

    missing = run_cli("build", "--model", tiny_artifact, "--input", tmp_path / "nope.jsonl", "--out", tmp_path / "o2")
    assert missing.returncode == 1 and "input file not found" in missing.stderr
    no_model = run_cli("build", "--model", tmp_path / "no-model", "--input", docs, "--out", tmp_path / "o3")
    assert no_model.returncode == 1 and "not a model artifact" in no_model.stderr
    no_index = run_cli("info", tmp_path / "o3")
    assert no_index.returncode == 1 and "no index at" in no_index.stderr
