"""The text rules shared by the service and the collection (indexes/text.py), and the JSON Schema patterns
that advertise them: a fuzzer generating from the pattern must only produce text the check accepts."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexes import Collection, Document, validate_document
from indexes.text import SCHEMA_PATTERNS, check_passage, check_text, text_problem


@pytest.mark.parametrize("text, offset", [("\ud800", 0), ("ab\udc00", 2), ("x\x00", 1), ("\x7f", 0), ("é\x9f", 1)])
def test_text_problem_names_the_character_and_its_offset(text, offset):
    assert f"U+{ord(text[offset]):04X}) at character offset {offset}" in text_problem(text)


@pytest.mark.parametrize("text", ["a\tb", "line\nline", "crlf\r\n", "zero\u200dwidth", "emoji 🙂", "\ufffd ok"])
def test_ordinary_text_has_no_problem(text):
    assert text_problem(text) is None and check_text(text) == text


@pytest.mark.parametrize("text", [",", ". . .", "a", "!!", "«»", "——", "\u3000。", "\ufffd\ufffd", "€$"])
def test_passages_need_content(text):
    with pytest.raises(ValueError, match="no content worth indexing"):
        check_passage(text)
    with pytest.raises(ValueError, match="document 'p': text has no content worth indexing"):
        validate_document(Document("p", text, "en"))


@pytest.mark.parametrize("text", ["ok", "東京", "42", "A1", "Привет!", "١٢", "नमस्ते"])
def test_short_passages_with_content_are_kept(text):
    assert check_passage(text) == text and validate_document(Document("p", text, "en")).text == text


def test_metadata_strings_and_depth_are_checked():
    with pytest.raises(ValueError, match=r"metadata\.a\[1\] contains a control character"):
        validate_document(Document("p", "some text", "en", metadata={"a": ["ok", "\x01"]}))
    deep: dict = {}
    node = deep
    for _ in range(33):
        node["k"] = {}
        node = node["k"]
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        validate_document(Document("p", "some text", "en", metadata=deep))


def test_the_collection_refuses_what_the_service_refuses(tmp_path, tiny_artifact):
    from encoder import OnnxEncoder

    with Collection.open(tmp_path / "index", OnnxEncoder(tiny_artifact, "fp32")) as collection:
        for bad in (Document("a", ",", "en"), Document("a", "text\ud800", "en"), Document("a\x00", "text", "en"),
                    Document("a", "text", "en", group="g\x1b")):
            with pytest.raises(ValueError):
                collection.add([bad])
        assert len(collection) == 0


def _agree(kind: str, text: str) -> None:
    check = check_passage if kind == "passage" else check_text
    try:
        check(text)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == bool(re.search(SCHEMA_PATTERNS[kind], text)), (kind, text)


@pytest.mark.parametrize("kind", ["text", "passage"])
@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8))
def test_the_schema_pattern_says_exactly_what_the_check_accepts(kind, text):
    _agree(kind, text)


@pytest.mark.parametrize("kind", ["text", "passage"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_text_generated_from_the_pattern_is_accepted(kind, data):
    text = data.draw(st.from_regex(SCHEMA_PATTERNS[kind], fullmatch=True))
    (check_passage if kind == "passage" else check_text)(text)
