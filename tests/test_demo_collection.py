"""The demo collection and its queries: well-formed, complete (15 topics x 12 languages), right scripts."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "demo"
LANGUAGES = {"en", "de", "fr", "es", "pt", "it", "ru", "zh", "ja", "ar", "hi", "tr"}
GROUPS = 15

KANA = re.compile(r"[\u3040-\u30ff]")
HAN = re.compile(r"[\u4e00-\u9fff]")
SCRIPT = {  # language -> a character class its text must contain
    "ja": re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]"),
    "zh": HAN,
    "ar": re.compile(r"[\u0600-\u06ff]"),
    "hi": re.compile(r"[\u0900-\u097f]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
}
LATIN_LANGUAGES = LANGUAGES - set(SCRIPT)
NON_LATIN_LETTER = re.compile(r"[\u0370-\u052f\u0600-\u06ff\u0900-\u097f\u3040-\u30ff\u4e00-\u9fff]")  # Greek, Cyrillic, Arabic, Devanagari, kana, Han


def read_rows(name: str) -> list[dict]:
    rows = []
    for number, line in enumerate((DEMO / name).read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{name}:{number}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{name}:{number}: not a JSON object"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return read_rows("collection.jsonl")


@pytest.fixture(scope="module")
def queries() -> list[dict]:
    return read_rows("queries.jsonl")


def test_documents_have_the_documented_fields(documents):
    for row in documents:
        assert set(row) == {"id", "text", "language", "group", "metadata"}, row.get("id")
        assert row["id"] == f"{row['group']}-{row['language']}"
        assert isinstance(row["metadata"].get("topic"), str) and row["metadata"]["topic"].strip()


def test_ids_are_unique(documents):
    duplicates = [i for i, n in Counter(row["id"] for row in documents).items() if n > 1]
    assert not duplicates


def test_every_group_has_every_language_once(documents):
    assert {row["language"] for row in documents} == LANGUAGES
    by_group: dict[str, list[str]] = {}
    for row in documents:
        by_group.setdefault(row["group"], []).append(row["language"])
    assert len(by_group) == GROUPS
    for group, languages in by_group.items():
        assert sorted(languages) == sorted(LANGUAGES), group
    topics = {row["group"]: row["metadata"]["topic"] for row in documents}
    assert all(row["metadata"]["topic"] == topics[row["group"]] for row in documents)
    assert len(set(topics.values())) == GROUPS


def test_texts_are_non_empty_bounded_and_distinct(documents):
    for row in documents:
        assert row["text"] == row["text"].strip() and 20 <= len(row["text"]) <= 1200, row["id"]
    assert len({row["text"] for row in documents}) == len(documents)


def test_queries_cover_every_group_and_language_once(documents, queries):
    for row in queries:
        assert set(row) == {"group", "language", "text"}
        assert 5 <= len(row["text"].strip()) <= 300, row
    keys = Counter((row["group"], row["language"]) for row in queries)
    assert set(keys) == {(row["group"], row["language"]) for row in documents}
    assert set(keys.values()) == {1}


def test_queries_do_not_copy_their_passage(documents, queries):
    passages = {(row["group"], row["language"]): row["text"].lower() for row in documents}
    for row in queries:
        question = row["text"].strip().rstrip("?？؟ ").lower()
        assert question not in passages[(row["group"], row["language"])], row


@pytest.mark.parametrize("name", ["collection.jsonl", "queries.jsonl"])
def test_texts_are_written_in_their_language_script(name):
    for row in read_rows(name):
        language, text = row["language"], row["text"]
        if language in SCRIPT:
            assert SCRIPT[language].search(text), (name, row.get("id", row["group"]), language)
        else:
            assert language in LATIN_LANGUAGES and not NON_LATIN_LETTER.search(text), (name, row.get("id"), language)
        if language == "ja":
            assert KANA.search(text), (name, row.get("id", row["group"]), "Japanese without kana")
        if language == "zh":
            assert not KANA.search(text), (name, row.get("id", row["group"]), "Chinese with kana")


def test_the_seed_reader_accepts_the_collection(documents):
    from indexes.documents import read_jsonl

    read = list(read_jsonl(DEMO / "collection.jsonl"))
    assert len(read) == len(documents)
