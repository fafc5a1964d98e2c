"""The OpenAPI schema (app/openapi.py): pinned in docs/openapi.json, documents every status a route answers, says
the running limits; /docs and /redoc work offline; and schemathesis (all checks) finds nothing (issue 12)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from fastapi.testclient import TestClient

from app.openapi import STATIC, default_schema
from tests.app_fixtures import free_port, grid_app, sample_rows, wait_ready, write_jsonl
from tests.conftest import ROOT

PINNED = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python -m app.openapi > docs/openapi.json"


def test_the_schema_is_pinned_in_docs_openapi_json():
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert pinned == json.loads(json.dumps(default_schema())), f"the API changed: regenerate with `{REGENERATE}`"


BODY = {400, 413, 415, 422}
STATUSES = {
    ("post", "/search"): {200, 429, 503} | BODY,
    ("post", "/v1/embeddings"): {200, 429, 503} | BODY,
    ("post", "/documents"): {200, 401, 403, 429, 503} | BODY,
    ("get", "/documents/{doc_id}"): {200, 404, 422, 503},
    ("delete", "/documents/{doc_id}"): {200, 401, 403, 404, 422, 503},
    ("post", "/audit"): {200, 404, 429, 503} | BODY,
    ("get", "/languages"): {200, 503},
    ("get", "/readyz"): {200, 503},
    ("get", "/livez"): {200},
    ("get", "/metrics"): {200},
    ("get", "/info"): {200},
    ("get", "/"): {200},
}


def test_every_status_a_route_answers_is_documented_with_its_body():
    schema = default_schema()
    operations = {(method, path): operation for path, item in schema["paths"].items()
                  for method, operation in item.items()}
    assert set(operations) == set(STATUSES)
    for key, statuses in STATUSES.items():
        responses = operations[key]["responses"]
        assert {int(status) for status in responses} == statuses, key
        for status in statuses - {200}:
            body = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
            assert body.endswith("OpenAIErrorBody" if key[1].startswith("/v1/") else "ErrorBody"), (key, status)
        for status in statuses & {429, 503}:
            assert "Retry-After" in responses[str(status)]["headers"]
    assert "HTTPValidationError" not in json.dumps(schema)  # FastAPI's default 422 body is not what we send


def test_the_schema_says_the_running_limits_and_the_model_dimension(tmp_path):
    with TestClient(grid_app(tmp_path, max_k=7, max_query_chars=99, max_embedding_inputs=5)) as client:
        wait_ready(client)
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["SearchRequest"]["properties"]["k"]["maximum"] == 7
    assert components["SearchRequest"]["properties"]["query"]["maxLength"] == 99
    assert components["AuditQuery"]["properties"]["text"]["maxLength"] == 99
    branches = components["EmbeddingsRequest"]["properties"]["input"]["anyOf"]
    assert [b.get("maxItems") for b in branches if b["type"] == "array"] == [5]
    dimensions = components["EmbeddingsRequest"]["properties"]["dimensions"]["anyOf"][0]
    assert dimensions["minimum"] == dimensions["maximum"] == 5
    assert schema["paths"]["/documents"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "maxItems"] == 1000


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_work_offline_from_assets_in_the_repository(tmp_path, page):
    with TestClient(grid_app(tmp_path)) as client:
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html.text), "loads something from the network"
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert assets and all(asset.startswith("/static/docs/") for asset in assets), assets
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
        assert "url: '/openapi.json'" in html.text or 'spec-url="/openapi.json"' in html.text
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (STATIC / "docs" / licence).is_file()


SCHEMATHESIS_CONFIG = """
# A passage without `language` whose language cannot be detected (random text) is refused with 422: that depends
# on the text, so no schema can say it. Every other 422 on this operation is covered by tests/test_app_text.py
# and tests/test_indexes_text.py (the schema patterns accept exactly what the checks accept).
[[operations]]
include-path = "/documents"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


def test_schemathesis_with_all_checks_finds_nothing(tmp_path, tiny_artifact):
    """The fuzzer the issue was found with, every phase and check, bounded: 10 examples per operation and phase,
    a fixed seed (reproducible), against `python -m app` on the tiny model (a real tokenizer) with the real
    language detector. The server runs in its own process, bounded by `timeout`."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(textwrap.dedent(SCHEMATHESIS_CONFIG), encoding="utf-8")
    port = free_port()
    env = {**os.environ, "BABELSEARCH_MODEL_DIR": str(tiny_artifact), "BABELSEARCH_INDEX_DIR": str(tmp_path / "idx"),
           "BABELSEARCH_SEED_COLLECTION": str(write_jsonl(tmp_path / "seed.jsonl", sample_rows())),
           "BABELSEARCH_API_KEY": "fuzz-key", "BABELSEARCH_WARM_UP": "false", "BABELSEARCH_PRECISION": "fp32",
           "BABELSEARCH_LANGUAGES": '["fr"]'}  # the seed's unlabelled French document is its only French one
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen(["timeout", "240", sys.executable, "-m", "app", "--host", "127.0.0.1", "--port",
                               str(port), "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while httpx_ready(base) is False:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                   f"{base}/openapi.json", "--checks", "all", "--max-examples", "10", "--seed", "12",
                   "--request-timeout", "20", "--workers", "1", "-H", "Authorization: Bearer fuzz-key"]
        try:
            run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=200)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"schemathesis ran past 200 s: {str(exc.stdout)[-3000:]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-8000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-2000:]
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def httpx_ready(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
