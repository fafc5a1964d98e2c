"""Errors (app/errors.py): domain exceptions mapped to HTTP in one table; `{"detail"}` bodies, and OpenAI's
`{"error": {...}}` on /v1, checked with the official openai client against the running service (issue 12)."""
from __future__ import annotations

import ast
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from app import errors
from tests.app_fixtures import grid_app, running_server, wait_ready
from tests.conftest import ROOT

KEY = "errors-key"


def test_one_table_maps_every_domain_error_to_a_status():
    domain = [cls for cls in vars(errors).values()
              if isinstance(cls, type) and issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError]
    assert set(domain) == set(errors.ERRORS)
    assert {status for status, _, _ in errors.ERRORS.values()} == {400, 401, 403, 404, 413, 415, 422, 429, 503}
    assert errors.classify(errors.TooLarge("x"))[0] == 413 and errors.classify(errors.LimitExceeded("x"))[0] == 422


def test_no_route_or_service_raises_http_exceptions_itself():
    for path in sorted((ROOT / "app").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "HTTPException" not in names or path.name == "errors.py", path


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(grid_app(tmp_path_factory.mktemp("errors"), api_key=KEY)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("get", "/documents/nope", {}, 404),
    ("get", "/nowhere", {}, 404),
    ("post", "/search", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400),
    ("post", "/search", {"json": {"query": ""}}, 422),
    ("post", "/documents", {"json": [{"id": "a", "text": "A de"}]}, 401),
    ("post", "/documents", {"json": [], "headers": {"X-API-Key": "wrong"}}, 403),
    ("put", "/search", {}, 405),
])
def test_errors_outside_v1_are_a_detail_sentence(client, method, path, kwargs, status):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status and list(response.json()) == ["detail"]
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("method, path, kwargs, status, code", [
    ("post", "/v1/embeddings", {"json": {"input": []}}, 422, "invalid_value"),
    ("post", "/v1/embeddings", {"json": {"input": "x" * 30000}}, 422, "limit_exceeded"),
    ("post", "/v1/embeddings", {"content": b"\xff", "headers": {"Content-Type": "application/json"}}, 400,
     "malformed_body"),
    ("get", "/v1/models", {}, 404, "not_found"),
    ("get", "/v1/embeddings", {}, 405, "method_not_allowed"),
])
def test_errors_on_v1_come_in_the_openai_shape(client, method, path, kwargs, status, code):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status and list(response.json()) == ["error"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]


def test_a_body_over_the_byte_limit_on_v1_is_413_in_the_openai_shape(tmp_path):
    with TestClient(grid_app(tmp_path, max_request_bytes=2048)) as small:
        wait_ready(small)
        response = small.post("/v1/embeddings", json={"input": "A de " * 1000})
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
        assert "BABELSEARCH_MAX_REQUEST_BYTES" in response.json()["error"]["message"]
        assert list(small.post("/search", json={"query": "x" * 5000}).json()) == ["detail"]


@pytest.fixture(scope="module")
def openai_client(tmp_path_factory):
    app = grid_app(tmp_path_factory.mktemp("openai"), max_embedding_inputs=3, max_tokens_per_request=10)
    with running_server(app, limit_s=120) as base:
        with openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", max_retries=0, timeout=10) as client:
            yield client


def test_the_openai_client_gets_embeddings(openai_client):
    result = openai_client.embeddings.create(input=["A de", "B en"], model="anything")
    assert [item.index for item in result.data] == [0, 1] and len(result.data[0].embedding) == 5
    assert result.usage.prompt_tokens == 4 and result.model == "model"
    floats = openai_client.embeddings.create(input="A de", model="anything", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)


@pytest.mark.parametrize("kwargs, exception, status, code, param, fragment", [
    (dict(input=["A de"] * 4), openai.UnprocessableEntityError, 422, "limit_exceeded", "input",
     "at most 3 texts per request (BABELSEARCH_MAX_EMBEDDING_INPUTS)"),
    (dict(input=["A de A de A de"] * 3), openai.APIStatusError, 413, "too_large", "input",
     "18 tokens, at most 10 per request (BABELSEARCH_MAX_TOKENS_PER_REQUEST)"),
    (dict(input=["A de", "bad\x00"]), openai.UnprocessableEntityError, 422, "invalid_value", "input",
     "item 1 contains a control character (U+0000) at character offset 3"),
    (dict(input="A de", dimensions=64), openai.UnprocessableEntityError, 422, "invalid_value", "dimensions",
     "5-dimensional"),
    (dict(input=" "), openai.UnprocessableEntityError, 422, "invalid_value", "input", "must not be empty"),
])
def test_the_openai_client_sees_our_message_code_and_param(openai_client, kwargs, exception, status, code, param,
                                                           fragment):
    with pytest.raises(exception) as caught:
        openai_client.embeddings.create(model="anything", **kwargs)
    error = caught.value
    assert error.status_code == status and error.code == code and error.param == param
    assert error.type == "invalid_request_error"
    assert fragment in error.body["message"] and fragment in str(error), str(error)


def test_openai_sdk_is_a_dev_dependency():
    assert '"openai' in Path(ROOT / "pyproject.toml").read_text() and '"schemathesis' in \
        Path(ROOT / "pyproject.toml").read_text()
