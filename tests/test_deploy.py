"""Deployment: `python -m app` serves over real HTTP, the Docker files run that same command, and
`docker compose up` itself works (``test_compose_up_for_real``: built and run with Docker or Podman).

The static checks need no engine: the compose file is parsed with pyyaml and the Dockerfile read as text.
The real one skips without an engine, naming the command that installs one (what .ci/run does).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.app_fixtures import sample_rows, write_jsonl
from tests.conftest import ROOT
from tests.container_engine import ENABLE, LOCAL_BASE_IMAGE, Engine, find_engine

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


def http(method: str, url: str, body: object = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_python_m_app_serves_over_http(tmp_path, tiny_artifact):
    port = free_port()
    env = {**os.environ, "BABELSEARCH_MODEL_DIR": str(tiny_artifact), "BABELSEARCH_INDEX_DIR": str(tmp_path / "idx"),
           "BABELSEARCH_SEED_COLLECTION": str(write_jsonl(tmp_path / "c.jsonl", sample_rows())),
           "BABELSEARCH_THREADS": "1", "BABELSEARCH_WARM_UP": "false",  # warm-up: see test_app.py
           "BABELSEARCH_DETECTION": "all"}  # the sample's French document is its only French one
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
    # published on this host only unless BABELSEARCH_PUBLISH says otherwise (the test's own port)
    assert service["ports"] == ["${BABELSEARCH_PUBLISH:-127.0.0.1:8000}:8000"]
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "/readyz" in command  # podman-compose 1.0 mis-quotes the CMD form


def test_compose_and_image_health_checks_agree():
    (line,) = [i for i in list(dockerfile_stages().values())[-1] if i.upper().startswith("HEALTHCHECK")]
    check = compose_service()["healthcheck"]
    for option, key in (("interval", "interval"), ("timeout", "timeout"), ("start-period", "start_period"),
                        ("retries", "retries")):
        assert f"--{option}={check[key]}" in line, (option, line)
    assert "urlopen('http://127.0.0.1:8000/readyz', timeout=4)" in line and "timeout=4)" in check["test"][1]


def test_compose_works_with_podman_compose_1_0():
    """podman-compose 1.0 (Debian's) leaves `${VAR:-}` as literal text, and the container then fails on
    it; an unset variable with no value in `environment` is passed through (or left out) by both."""
    text = "\n".join(line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines())  # not the comments
    assert not re.search(r"\$\{\w+:?-\}", text), "an empty default substitution"
    environment = compose_service()["environment"]
    for name in ("BABELSEARCH_API_KEY", "BABELSEARCH_INDEX_TYPE", "BABELSEARCH_THREADS"):
        assert environment[name] is None, name  # from the shell when set there


def test_compose_keeps_the_index_on_a_named_volume_and_serves_the_image_model():
    service = compose_service()
    environment = service["environment"]
    named = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    mounts = dict(reversed(v.split(":", 1)) for v in service["volumes"])  # container path -> volume
    assert mounts[environment["BABELSEARCH_INDEX_DIR"]] in named
    # the model comes from the image (a volume would keep serving an old model after a rebuild)
    assert not any(environment["BABELSEARCH_MODEL_DIR"].startswith(path) for path in mounts)
    assert environment["BABELSEARCH_SEED_COLLECTION"].endswith("demo/collection.jsonl")


def test_dockerfile_serving_stage_is_torch_free_non_root_and_runs_the_tested_command():
    stages = dockerfile_stages()
    serve = list(stages.values())[-1]
    installs = " ".join(i for i in serve if i.upper().startswith("RUN"))
    assert "requirements.py serve" in installs
    assert not re.search(r"torch|train", installs), installs
    assert cmd_of(serve) == CONTAINER_COMMAND
    assert any(i.upper().startswith("USER ") and "root" not in i for i in serve)
    assert "/readyz" in next(i for i in serve if i.upper().startswith("HEALTHCHECK"))
    copied = " ".join(i for i in serve if i.upper().startswith("COPY"))
    assert "--from=model /models" in copied and "trainer" not in copied


def test_dockerfile_model_stage_builds_the_model_as_make_model_does():
    stages = dockerfile_stages()
    model = " ".join(stages["model"])
    # torch: the CPU build, from a local wheel folder or an index, both build arguments
    assert "ARG TORCH_WHEELS=docker/wheels" in model and "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in model
    assert "torch==2.13.0+cpu" in model
    assert "requirements.py train" in model
    assert 'scripts/build_model.sh /models/e5-small-recommended --adapter "$MODEL_ADAPTER" --only int8' in model
    assert "ARG MODEL_ADAPTER=adapters/recommended" in model  # build_model.sh's own default
    assert "adapter=${adapter:-adapters/recommended}" in (ROOT / "scripts" / "build_model.sh").read_text()
    assert "scripts/build_model.sh $(MODEL)" in (ROOT / "Makefile").read_text()  # the same command
    serve = list(stages.values())[-1]
    env = " ".join(i for i in serve if i.upper().startswith("ENV"))
    assert "BABELSEARCH_MODEL_DIR=/models/e5-small-recommended" in env and "BABELSEARCH_PRECISION=int8" in env
    assert compose_service()["environment"]["BABELSEARCH_MODEL_DIR"] == "/models/e5-small-recommended"
    assert compose_service()["environment"]["BABELSEARCH_PRECISION"] == "int8"


@pytest.mark.parametrize("path", ["app", "encoder", "indexes", "evaluation"])
def test_serving_image_copies_every_serving_package(path):
    serve = list(dockerfile_stages().values())[-1]
    assert f"COPY {path} {path}" in serve


def test_build_context_holds_what_the_image_copies_and_no_more():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().split("\n") if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is left out unless listed
    copied = {i.split()[1] for stage in dockerfile_stages().values() for i in stage
              if i.upper().startswith("COPY") and "--from" not in i}
    copied = {path for path in copied if not path.startswith("$")} | {"docker/wheels"}  # ${TORCH_WHEELS}
    assert {f"!{path}" for path in copied} <= set(ignore), copied - {p[1:] for p in ignore}


# --- `docker compose up`, for real ------------------------------------------------------------------------

IMAGE = "localhost/babelsearch:deploy-test"
WHEELS = ROOT / "docker" / "wheels"
BUILD_TIMEOUT = 900  # a cold build here takes ~3 min (docs/deploy.md); cached, seconds
READY_TIMEOUT = 240
DEMO_DOCUMENTS = 180
REPORT = ROOT / "var" / "deploy" / "last-run.json"  # the timings of the last run, for docs/deploy.md


@pytest.fixture(scope="module")
def engine() -> Engine:
    found = find_engine()
    if found is None:
        pytest.skip(f"no container engine (Docker with Compose v2, or Podman with podman-compose): "
                    f"`{ENABLE}` installs one (.ci/run does)")
    return found


def local_torch_wheel() -> None:
    """Put torch into the build context's wheel folder from wherever this machine's pip takes it (a local
    wheel folder or mirror), so the build needs no PyTorch index; without one, the build uses the index."""
    if not list(WHEELS.glob("torch-2.13.0+cpu-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-index",
                        "torch==2.13.0+cpu", "-d", str(WHEELS)], capture_output=True, timeout=300)


def build_image(engine: Engine, log_path) -> tuple[float, str]:
    local_torch_wheel()
    base = os.environ.get("BABELSEARCH_BASE_IMAGE") or (LOCAL_BASE_IMAGE if engine.has_image(LOCAL_BASE_IMAGE) else None)
    adapter = os.environ.get("BABELSEARCH_MODEL_ADAPTER")  # e.g. none: the base model
    command = ["build", *engine.build_args(), "--network", "host", "-f", "docker/Dockerfile", "-t", IMAGE,
               *(["--build-arg", f"BASE_IMAGE={base}"] if base else []),
               *(["--build-arg", f"MODEL_ADAPTER={adapter}"] if adapter else []), "."]
    start = time.monotonic()
    result = subprocess.run([engine.name, *command], cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    log_path.write_text(result.stdout + result.stderr)
    hint = "" if base else f" (no registry here? `sudo docker/make-base-image.sh` makes {LOCAL_BASE_IMAGE})"
    assert result.returncode == 0, f"image build failed{hint}; the end of {log_path}:\n{(result.stdout + result.stderr)[-4000:]}"
    return time.monotonic() - start, adapter or "adapters/recommended"


class Deployment:
    """One compose project of the test's own: its containers, volume and port, nothing else."""

    def __init__(self, engine: Engine, port: int, key: str) -> None:
        self.engine, self.port, self.key = engine, port, key
        self.project = f"babelsearch-deploytest-{os.getpid()}"
        self.url = f"http://127.0.0.1:{port}"
        # the developer's own BABELSEARCH_* settings stay out of the test's container
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BABELSEARCH_")}
        self.env.update(BABELSEARCH_IMAGE=IMAGE, BABELSEARCH_PUBLISH=f"127.0.0.1:{port}", BABELSEARCH_API_KEY=key)

    def compose(self, *args: str, timeout: float = 180) -> None:
        self.engine.compose_run(self.project, str(COMPOSE), *args, timeout=timeout, env=self.env)

    def up(self) -> float:
        start = time.monotonic()
        self.compose("up", "-d", "--no-build")
        return start

    def container(self) -> str:
        (container,) = self.engine.project_containers(self.project)
        return container

    def logs(self) -> str:
        containers = self.engine.project_containers(self.project)
        if not containers:
            return "(no container)"
        result = self.engine.run("logs", "--tail", "40", containers[0], timeout=60, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def wait_ready(self, start: float) -> tuple[float, dict]:
        deadline = start + READY_TIMEOUT
        while True:
            try:
                status, body = http("GET", f"{self.url}/readyz", timeout=5)
                if status == 200:
                    return time.monotonic() - start, body
                assert "failed" not in body.get("detail", ""), f"{body}\n{self.logs()}"
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT} s:\n{self.logs()}"
            time.sleep(0.25)

    def healthy(self) -> bool:
        """The image's health check, as the engine runs it."""
        container = self.container()
        if self.engine.name == "podman":  # podman schedules checks with systemd timers; run one directly
            return self.engine.run("healthcheck", "run", container, timeout=60, check=False).returncode == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.engine.run("inspect", "--format", "{{.State.Health.Status}}", container, timeout=60).stdout
            if status.strip() == "healthy":
                return True
            time.sleep(1)
        return False

    def rss_mb(self) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        return float(re.search(r"^process_resident_memory_bytes (\S+)$", metrics, re.MULTILINE).group(1)) / 1e6

    def remove(self) -> None:
        """`down -v`, then whatever a failed `down` left of this project."""
        try:
            self.compose("down", "-v", timeout=180)
        except (AssertionError, subprocess.TimeoutExpired):
            pass
        for container in self.engine.project_containers(self.project):
            self.engine.run("rm", "-f", container, timeout=120, check=False)
        for volume in self.engine.project_volumes(self.project):
            self.engine.run("volume", "rm", "-f", volume, timeout=120, check=False)
        if self.engine.name == "podman":  # podman-compose puts the project's containers in a pod of that name
            self.engine.run("pod", "rm", "-f", f"pod_{self.project}", timeout=120, check=False)


def demo_documents(prefix: str, count: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "demo" / "collection.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{"id": f"{prefix}-{i}", "text": rows[i % len(rows)]["text"], "language": rows[i % len(rows)]["language"]}
            for i in range(count)]


class Ingest(threading.Thread):
    """Posts batches of documents until stopped (or the server goes away); remembers what was acknowledged."""

    def __init__(self, url: str, key: str, documents: list[dict], batch: int = 8) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.documents, self.batch = url, {"Authorization": f"Bearer {key}"}, documents, batch
        self.acknowledged: list[str] = []
        self.in_flight: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        for start in range(0, len(self.documents), self.batch):
            if self.stop.is_set():
                return
            batch = self.documents[start : start + self.batch]
            self.in_flight = [doc["id"] for doc in batch]
            try:
                status, _ = http("POST", f"{self.url}/documents", batch, self.headers, timeout=60)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                return  # killed under us: this batch was not acknowledged
            if status != 200:
                return
            self.acknowledged += self.in_flight
            self.in_flight = []


def probe_readyz(url: str, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            http("GET", f"{url}/readyz", timeout=5)
            latencies.append((time.perf_counter() - start) * 1000)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            latencies.append(float("inf"))
        time.sleep(0.05)


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


def test_compose_up_for_real(engine, tmp_path):
    """Build the image, `compose up`, search in two languages, write with the key, restart, kill -9 in the
    middle of an ingest and find every acknowledged document, `down -v`. Only through 127.0.0.1:PORT."""
    report: dict = {"engine": engine.name, "compose": " ".join(engine.compose)}
    began = time.monotonic()
    seconds, report["model_adapter"] = build_image(engine, tmp_path / "build.log")
    report["build_s"] = round(seconds, 1)
    report["image_mb"] = round(engine.image_bytes(IMAGE) / 1e6)
    key = secrets.token_urlsafe(16)
    deployment = Deployment(engine, free_port(), key)
    base, auth = deployment.url, {"Authorization": f"Bearer {key}"}
    try:
        seconds, body = deployment.wait_ready(deployment.up())
        report["cold_ready_s"] = round(seconds, 1)
        assert seconds <= 60, report  # issue 17's target (12.9-14.6 s measured here)
        assert body["documents"] == DEMO_DOCUMENTS and body["model"] == "e5-small-recommended"
        assert deployment.healthy(), deployment.logs()

        # meaning across languages, and the query's own language on request
        for query, language in (("Wie wandeln Pflanzen Licht in chemische Energie um?", "de"),
                                ("植物はどのように光を化学エネルギーに変えますか？", "ja")):
            status, found = http("POST", f"{base}/search", {"query": query, "k": 5})
            assert status == 200 and found["results"][0]["group"] == "photosynthesis", found
            # calibrated as `make serve` is: from the artifact's statistics, else the collection's own
            assert found["calibration"]["method"] == "center" and found["query_language"] == language
            status, found = http("POST", f"{base}/search", {"query": query, "k": 1, "languages": [language]})
            assert [r["id"] for r in found["results"]] == [f"photosynthesis-{language}"], found
        assert http("GET", f"{base}/info")[1]["model"]["precision"] == "int8"

        written = demo_documents("deploy-written", 2)
        assert http("POST", f"{base}/documents", written)[0] == 401  # no key, no write
        status, body = http("POST", f"{base}/documents", written, auth)
        assert status == 200 and body["documents"] == DEMO_DOCUMENTS + 2, body
        report["rss_mb"] = round(deployment.rss_mb())
        assert report["rss_mb"] <= 800, report  # issue 17's target (718-719 MB measured here)

        # `down` and `up` with the volume kept: the documents are there, the seed is not ingested again
        deployment.compose("down")
        seconds, body = deployment.wait_ready(deployment.up())
        report["warm_ready_s"] = round(seconds, 1)
        assert seconds <= 15, report  # issue 17's target (4.1-4.4 s measured here)
        assert body["documents"] == DEMO_DOCUMENTS + 2
        assert http("GET", f"{base}/documents/deploy-written-1")[1]["text"] == written[1]["text"]

        # a large ingest: /readyz keeps answering; then kill -9 while a batch is in flight
        ingest = Ingest(base, key, demo_documents("deploy-ingest", 2000))
        stop, latencies = threading.Event(), []
        prober = threading.Thread(target=probe_readyz, args=(base, stop, latencies), daemon=True)
        prober.start()
        ingest.start()
        deadline = time.monotonic() + 120
        while (len(ingest.acknowledged) < 64 or time.monotonic() < deadline - 105) and time.monotonic() < deadline:
            assert ingest.is_alive(), f"ingest stopped early\n{deployment.logs()}"
            time.sleep(0.1)
        while not ingest.in_flight:  # mid-request
            time.sleep(0.005)
        stop.set()
        prober.join()
        engine.run("kill", deployment.container(), timeout=60)  # SIGKILL
        ingest.join(timeout=60)
        acknowledged, in_flight = list(ingest.acknowledged), list(ingest.in_flight)
        report["ingest_acknowledged"] = len(acknowledged)
        report["readyz_during_ingest_ms"] = {"n": len(latencies), "p50": round(sorted(latencies)[len(latencies) // 2], 1),
                                             "p99": round(p99(latencies), 1), "max": round(max(latencies), 1)}
        # every probe answered, p99 within issue 17's target (17.5-30.9 ms measured here)
        assert max(latencies) < 3000 and p99(latencies) < 100, report["readyz_during_ingest_ms"]

        seconds, body = deployment.wait_ready(deployment.up())  # starts the killed container again
        report["after_kill_ready_s"] = round(seconds, 1)
        missing = [doc_id for doc_id in acknowledged if http("GET", f"{base}/documents/{doc_id}")[0] != 200]
        assert not missing, f"{len(missing)} acknowledged documents lost, e.g. {missing[:3]}"
        present = {doc_id for doc_id in in_flight if http("GET", f"{base}/documents/{doc_id}")[0] == 200}
        assert present in (set(), set(in_flight)), "a write was half applied"  # all of a batch or none
        assert body["documents"] == DEMO_DOCUMENTS + 2 + len(acknowledged) + len(present)
    finally:
        deployment.remove()
        report["total_s"] = round(time.monotonic() - began, 1)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\ndeploy test: {json.dumps(report)}")
    assert not engine.project_containers(deployment.project) and not engine.project_volumes(deployment.project)
