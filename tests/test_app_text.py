"""Text is checked once, at the edge (issue 12): lone surrogates, control characters and invalid UTF-8 get a
4xx naming the field and the position, on every route and field; numbers are not read from strings."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.app_fixtures import grid_app, wait_ready

KEY = "text-key"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(grid_app(tmp_path_factory.mktemp("text"), api_key=KEY)) as test_client:
        wait_ready(test_client)
        yield test_client


def post(client, path: str, raw: str):
    """``raw`` is JSON text as a client writes it, escapes included (json.dumps keeps "\\ud800" escaped)."""
    return client.post(path, content=raw.encode("utf-8"), headers={**JSON, "X-API-Key": KEY})


def message(response) -> str:
    body = response.json()
    return body["error"]["message"] if "error" in body else body["detail"]


BAD = {  # JSON escapes a client can send: a lone surrogate (valid JSON, not valid Unicode) and control characters
    "surrogate": ("ab\\ud800", "lone UTF-16 surrogate (U+D800) at character offset 2"),
    "low surrogate": ("\\udfffx", "lone UTF-16 surrogate (U+DFFF) at character offset 0"),
    "NUL": ("a b\\u0000", "control character (U+0000) at character offset 3"),
    "escape": ("x\\u001b[31m", "control character (U+001B) at character offset 1"),
    "C1": ("ok\\u0085", "control character (U+0085) at character offset 2"),
}
FIELDS = [  # route, JSON body with {} where the bad text goes, the field the message must name
    ("/search", '{{"query": "{}"}}', "query"),
    ("/search", '{{"query": "A de", "languages": ["{}"]}}', "languages[0]"),
    ("/search", '{{"query": "A de", "query_language": "{}"}}', "query_language"),
    ("/v1/embeddings", '{{"input": "{}"}}', "input: item 0"),
    ("/v1/embeddings", '{{"input": ["A de", "{}"]}}', "input: item 1"),
    ("/documents", '[{{"id": "{}", "text": "some text"}}]', "body[0].id"),
    ("/documents", '[{{"id": "x", "text": "{}"}}]', "body[0].text"),
    ("/documents", '[{{"id": "x", "text": "some text", "group": "{}"}}]', "body[0].group"),
    ("/documents", '[{{"id": "x", "text": "some text", "metadata": {{"source": "{}"}}}}]', "metadata.source"),
    ("/documents", '[{{"id": "x", "text": "some text", "metadata": {{"a": [{{"b": "{}"}}]}}}}]', "metadata.a[0].b"),
    ("/documents", '[{{"id": "x", "text": "some text", "metadata": {{"{}": 1}}}}]', "metadata key"),
    ("/audit", '{{"queries": [{{"text": "{}", "group": "A"}}]}}', "queries[0].text"),
    ("/audit", '{{"queries": [{{"text": "A de", "group": "{}"}}]}}', "queries[0].group"),
    ("/audit", '{{"queries": [{{"text": "A de", "relevant_ids": ["{}"]}}]}}', "queries[0].relevant_ids[0]"),
]


@pytest.mark.parametrize("route, template, field", FIELDS)
@pytest.mark.parametrize("kind", list(BAD))
def test_every_text_field_refuses_surrogates_and_control_characters(client, route, template, field, kind):
    text, where = BAD[kind]
    response = post(client, route, template.format(text))
    assert response.status_code == 422, response.text
    assert field in message(response), message(response)
    if "language" not in field:  # a language code is checked against the codes, and named
        assert where in message(response), message(response)
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("path", ["a%00b", "x%1By", "%C2%85"])
def test_document_ids_in_the_path_are_checked_too(client, path):
    for response in (client.get(f"/documents/{path}"), client.delete(f"/documents/{path}", headers={"X-API-Key": KEY})):
        assert response.status_code == 422 and "doc_id: contains a control character" in response.json()["detail"]


def test_tab_newline_and_carriage_return_are_text(client):
    response = post(client, "/documents", '[{"id": "multi\\tline", "text": "A\\r\\n\\tde", '
                                          '"language": "en", "metadata": {"note": "a\\nb"}}]')
    assert response.status_code == 200, response.text
    assert client.get("/documents/multi%09line").json()["metadata"] == {"note": "a\nb"}


@pytest.mark.parametrize("route", ["/search", "/v1/embeddings", "/documents", "/audit"])
def test_invalid_utf8_says_where(client, route):
    body = b'{"query": "caf\xc3", "x": 1}' if route != "/documents" else b'[{"id": "a", "text": "\xff"}]'
    response = client.post(route, content=body, headers={**JSON, "X-API-Key": KEY})
    assert response.status_code == 400
    offset = body.index(b"\xc3" if b"\xc3" in body else b"\xff")
    assert f"body is not valid UTF-8: byte 0x{body[offset]:02x} at byte offset {offset}" in message(response)


@pytest.mark.parametrize("raw, fragment", [
    (b'{"query": "A de",', "malformed JSON body: Expecting property name enclosed in double quotes at line 1, "
                           "column 18 (character offset 17)"),
    (b'{"query": "A de", "k": NaN}', "NaN is not valid JSON"),
    (b'{"query": "A de", "k": Infinity}', "Infinity is not valid JSON"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"query": "A de", "k": 1' + b"0" * 5000 + b"}", "malformed JSON body: Exceeds the limit"),
])
def test_malformed_json_gets_400_with_the_position(client, raw, fragment):
    response = client.post("/search", content=raw, headers=JSON)
    assert response.status_code == 400 and fragment in response.json()["detail"], response.json()


def test_a_body_not_sent_as_json_gets_415(client):
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}):
        response = client.post("/search", content=b'{"query": "A de"}', headers=headers)
        assert response.status_code == 415 and "Content-Type: application/json" in response.json()["detail"]
    assert client.post("/search", content=b'{"query": "A de", "query_language": "de"}',
                       headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


@pytest.mark.parametrize("route, body, field", [
    ("/search", {"query": "A de", "k": "5"}, "k"),
    ("/search", {"query": "A de", "per_language": "1"}, "per_language"),
    ("/search", {"query": 5}, "query"),
    ("/search", {"query": "A de", "k": True}, "k"),
    ("/search", {"query": "A de", "k": 2.5}, "k"),
    ("/v1/embeddings", {"input": "A de", "dimensions": "5"}, "dimensions"),
    ("/audit", {"k": "3"}, "k"),
    ("/audit", {"max_queries": "2"}, "max_queries"),
    ("/documents", [{"id": 7, "text": "some text"}], "body[0].id"),
    ("/documents", [{"id": "x", "text": "some text", "group": 3}], "body[0].group"),
])
def test_numbers_are_never_read_from_strings_nor_strings_from_numbers(client, route, body, field):
    response = client.post(route, json=body, headers={"X-API-Key": KEY})
    assert response.status_code == 422 and message(response).startswith(field), message(response)


def test_a_whole_number_written_as_a_float_is_an_integer(client):
    """JSON Schema counts 2.0 as an integer, so the service does too (the fuzzer checks exactly this)."""
    body = client.post("/search", json={"query": "A de", "query_language": "de", "k": 2.0}).json()
    assert len(body["results"]) == 2
    assert client.post("/v1/embeddings", json={"input": "A de", "dimensions": 5.0}).status_code == 200


@pytest.mark.parametrize("text", [",", "...", " - ", "!?", "a", "「」", "——", "1", "\u3000、。"])
def test_passages_with_no_content_worth_indexing_are_refused(client, text):
    response = client.post("/documents", json=[{"id": "hub", "text": text, "language": "en"}], headers={"X-API-Key": KEY})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("body[0].text: has no content worth indexing"), response.json()
    assert client.get("/documents/hub").status_code == 404


def test_metadata_nested_too_deeply_is_refused_before_it_can_break_responses(client):
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    response = client.post("/documents", json=[{"id": "deep", "text": "some text", "language": "en", "metadata": deep}],
                           headers={"X-API-Key": KEY})
    assert response.status_code == 422 and "nested deeper than 32 levels" in response.json()["detail"]


def test_error_messages_quote_at_most_an_excerpt(client):
    huge_code = "x" * 5000
    response = client.post("/search", json={"query": "A de", "languages": [huge_code]})
    assert response.status_code == 422 and len(response.content) < 1000, len(response.content)
    response = client.get("/documents/" + "y" * 400)
    assert response.status_code == 404 and len(response.content) < 300
    body = json.dumps([{}] * 500)  # 1000 validation problems (id and text missing from each)
    response = client.post("/documents", content=body, headers={**JSON, "X-API-Key": KEY})
    assert response.status_code == 422 and "and 995 more problems" in response.json()["detail"]
    assert len(response.content) < 1000
