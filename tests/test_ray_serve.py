"""Replicated serving on a real local Ray cluster (app.cluster): `python -m app.cluster` serves and stops,
two search replicas answer as one does (and as the plain single-process service), a write acknowledged
through one replica is seen by the very next read on every replica, and killing a replica during a
stream of searches and writes loses no acknowledged request when clients retry as docs/scaling.md says.

The tiny random model keeps deploys cheap; one deployment of one replica (through the command) and one of
two (through ``serve.run``) serve all the tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.app_fixtures import make_settings, sample_rows, wait_ready, wait_until, write_jsonl
from tests.ray_fixtures import connect, free_port, ray_cluster  # noqa: F401

# Ray Serve's own pydantic models warn on import (PydanticDeprecatedSince20): not this project's to fix
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key"
# query, query_language (None: detected, as most clients do), languages searched
QUERIES = [
    ("How many people live in Berlin?", "en", None),
    ("Wie funktioniert die Photosynthese?", "de", None),
    ("南アメリカで最も高い山", "ja", None),
    ("the old town and its river", "en", ["de", "ja"]),
    ("Where is the Eiffel tower?", None, None),
]
STREAM_SEARCHES, STREAM_CLIENTS = 200, 4
RETRY_STATUSES = {500, 503}  # docs/scaling.md: a replica that died mid-request (500), not ready (503)
START_TIMEOUT_S = 240
CLI_WRITE = {"id": "cli-write", "text": "Lisboa fica junto ao rio Tejo.", "language": "pt"}


def seed_rows() -> list[dict]:
    # every language given: documents without one would load the language detector's models (slow)
    return [{**row, "language": row.get("language") or "fr"} for row in sample_rows()]


def cluster_settings(tmp_path: Path, artifact: Path):
    seed = write_jsonl(tmp_path / "seed.jsonl", seed_rows())
    return make_settings(tmp_path, artifact, seed, api_key=API_KEY, detection="served", threads=1)


def search(client: httpx.Client, query: str, language: str | None, languages=None, k: int = 10) -> httpx.Response:
    return client.post("/search", json={"query": query, "query_language": language, "languages": languages, "k": k})


def ranking(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(hit["id"], round(hit["score"], 5)) for hit in response.json()["results"]]


def rankings(client: httpx.Client) -> dict[str, list[tuple[str, float]]]:
    return {query: ranking(search(client, query, language, languages)) for query, language, languages in QUERIES}


def with_retries(send, attempts: int = 60, pause_s: float = 0.25) -> tuple[httpx.Response, int]:
    """What a client does (docs/scaling.md): send again on 500/503 or a dropped connection. Returns the
    answer and how many retries it took."""
    for attempt in range(attempts):
        try:
            response = send()
            if response.status_code not in RETRY_STATUSES:
                return response, attempt
        except httpx.TransportError:
            pass
        time.sleep(pause_s)
    raise AssertionError(f"no answer after {attempts} attempts")


def replica_names() -> list[str]:
    import ray

    return sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                  if "#SearchReplica#" in actor["name"])


# --- the deployments ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def index_settings(tiny_artifact, tmp_path_factory):
    return cluster_settings(tmp_path_factory.mktemp("ray-serve"), tiny_artifact)


@pytest.fixture(scope="module")
def single_process(tiny_artifact, tmp_path_factory):
    """The plain service (`python -m app`'s app, in process) over the same seed, with its own index."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = cluster_settings(tmp_path_factory.mktemp("single"), tiny_artifact)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.post("/documents", headers={"X-API-Key": API_KEY}, json=[CLI_WRITE]).status_code == 200
        yield rankings(client)


@pytest.fixture(scope="module")
def one_replica(ray_cluster, index_settings):  # noqa: F811
    """`python -m app.cluster --replicas 1` against the test cluster: its ready line, a write it
    acknowledged, the rankings it served then, and how it exited on Ctrl-C."""
    port, work = free_port(), index_settings.index_dir.parent
    env = {**os.environ, "BABELSEARCH_MODEL_DIR": str(index_settings.model_dir),
           "BABELSEARCH_INDEX_DIR": str(index_settings.index_dir), "BABELSEARCH_API_KEY": API_KEY,
           "BABELSEARCH_SEED_COLLECTION": str(index_settings.seed_collection), "BABELSEARCH_PRECISION": "fp32",
           "BABELSEARCH_WARM_UP": "false", "BABELSEARCH_DETECTION": "served"}
    command = [sys.executable, "-m", "app.cluster", "--address", ray_cluster.address, "--replicas", "1",
               "--threads", "1", "--port", str(port), "--log-level", "warning"]
    out, err = work / "cluster.out", work / "cluster.err"  # files: the replicas' logs reach the driver too
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True,
                                   start_new_session=True)
    try:
        ready = _ready_line(process, out, err)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            written = client.post("/documents", headers={"X-API-Key": API_KEY}, json=[CLI_WRITE])
            read_back = client.get(f"/documents/{CLI_WRITE['id']}")
            served = rankings(client)
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return {"ready": ready, "rankings": served, "written": written, "read_back": read_back, "exit_code": exit_code,
            "stderr": err.read_text()}


def _ready_line(process: subprocess.Popen, out: Path, err: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        line = next((line for line in out.read_text().splitlines() if line.startswith("ready on ")), None)
        if line:
            return line
        time.sleep(0.2)
    raise AssertionError(f"python -m app.cluster not ready (exit code {process.poll()}):\n{err.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def two_replicas(ray_cluster, index_settings, one_replica):  # noqa: F811
    """The same index served by two search replicas (``serve.run`` of the same application, after the
    command above stopped): yields the base URL."""
    connect(ray_cluster)
    from ray import serve

    from app.cluster.application import APP_NAME, build_application

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_application(index_settings, replicas=2, encoders=1, threads=1, log_level="warning"),
                  name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


# --- the tests ---------------------------------------------------------------------------------------------

def test_the_remote_encoder_describes_the_artifact_as_the_onnx_encoder_does(tiny_artifact):
    """What an index binds to and what the token limits count: the cluster's indexes open in `python -m app`."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install .[ray]")
    from app.cluster.encoder import RemoteEncoder
    from encoder import OnnxEncoder

    local, remote = OnnxEncoder(tiny_artifact, "fp32"), RemoteEncoder(None, tiny_artifact, "fp32", max_texts=32)
    assert (remote.dim, remote.fingerprint, remote.precision) == (local.dim, local.fingerprint, local.precision)
    texts = [text for text, _, _ in QUERIES]
    for kind in ("query", "passage"):
        assert remote.count_tokens(texts, kind) == local.count_tokens(texts, kind)


def test_the_command_serves_until_ctrl_c(one_replica):
    assert one_replica["ready"].startswith("ready on http://127.0.0.1:")
    assert "1 search replica, 1 encoder replica x 1 thread, one writer; 13 documents" in one_replica["ready"]
    assert one_replica["written"].status_code == 200, one_replica["written"].text
    assert one_replica["written"].json()["documents"] == 14
    assert one_replica["read_back"].json()["text"] == "Lisboa fica junto ao rio Tejo."
    assert one_replica["exit_code"] == 0, one_replica["stderr"][-3000:]


def test_two_replicas_answer_as_one_and_as_the_single_process(one_replica, two_replicas, single_process):
    assert one_replica["rankings"] == single_process
    answered_by = set()
    with httpx.Client(base_url=two_replicas, timeout=30) as client:
        for _ in range(4):  # each query several times: both replicas answer some of them
            for query, language, languages in QUERIES:
                response = search(client, query, language, languages)
                assert ranking(response) == single_process[query], query
                answered_by.add(response.headers["x-babelsearch-replica"])
        assert client.get("/readyz").json()["documents"] == 14  # the command's write is in the index
    assert len(answered_by) == 2


def test_an_acknowledged_write_is_seen_by_the_next_read_on_every_replica(two_replicas):
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=two_replicas, timeout=30) as client:
        before = client.get("/readyz").json()["documents"]
        for n in range(4):
            doc_id = f"ryw-{n}"
            written = client.post("/documents", headers=headers,
                                  json=[{"id": doc_id, "text": f"El documento número {n} acaba de llegar.",
                                         "language": "es"}])
            assert written.status_code == 200, written.text
            assert written.json()["documents"] == before + 1
            _on_both_replicas(lambda: _reads(client, doc_id, before + 1))
            assert client.delete(f"/documents/{doc_id}", headers=headers).status_code == 200
            _on_both_replicas(lambda: _reads(client, doc_id, before, present=False))


def _reads(client: httpx.Client, doc_id: str, documents: int, present: bool = True) -> str:
    """A search, a GET and /readyz all see the write (or the delete); returns the replica that searched."""
    response = search(client, "documento", "es", ["es"], k=100)
    ids = [hit["id"] for hit in response.json()["results"]]
    assert (doc_id in ids) == present, (doc_id, ids)
    assert client.get(f"/documents/{doc_id}").status_code == (200 if present else 404)
    assert client.get("/readyz").json()["documents"] == documents  # the replica's cached counts followed
    return response.headers["x-babelsearch-replica"]


def _on_both_replicas(read) -> None:
    """``read()`` (right after a write; returns the replica that answered) until both replicas have."""
    seen = set()
    for _ in range(24):
        seen.add(read())
        if len(seen) == 2:
            return
    raise AssertionError(f"only replica(s) {seen} answered 24 reads")


def test_killing_a_replica_loses_no_acknowledged_request(two_replicas):
    import ray

    languages = ["en", "de", "ja"]  # the writes below go to Portuguese: the expected rankings stay put
    with httpx.Client(base_url=two_replicas, timeout=30) as client:
        expected = {query: ranking(search(client, query, language, languages)) for query, language, _ in QUERIES}
    victim = replica_names()[0]
    done, retries, acknowledged, failures = [], [], [], []
    stop_writing = threading.Event()

    def searches(worker: int) -> None:
        with httpx.Client(base_url=two_replicas, timeout=30) as client:
            for n in range(worker, STREAM_SEARCHES, STREAM_CLIENTS):
                query, language, _ = QUERIES[n % len(QUERIES)]
                try:
                    response, retried = with_retries(lambda: search(client, query, language, languages))
                    assert ranking(response) == expected[query]
                except AssertionError as exc:
                    failures.append(f"search {n}: {exc}")
                    continue
                done.append(n)
                retries.append(retried)

    def writes() -> None:
        with httpx.Client(base_url=two_replicas, timeout=30) as client:
            n = 0
            while not stop_writing.is_set():
                doc = {"id": f"kill-{n}", "text": f"Documento {n}, escrito durante a queda de uma réplica.",
                       "language": "pt"}
                response, _ = with_retries(lambda: client.post("/documents", headers={"X-API-Key": API_KEY},
                                                               json=[doc]))
                if response.status_code == 200:
                    acknowledged.append(doc["id"])
                else:
                    failures.append(f"write {n}: {response.status_code} {response.text}")
                n += 1

    threads = [threading.Thread(target=searches, args=(worker,)) for worker in range(STREAM_CLIENTS)]
    writer = threading.Thread(target=writes)
    for thread in [*threads, writer]:
        thread.start()
    wait_until(lambda: len(done) >= STREAM_SEARCHES // 5, timeout=60)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for thread in threads:
        thread.join(120)
    stop_writing.set()
    writer.join(120)

    assert not failures, failures[:5]
    assert sorted(done) == list(range(STREAM_SEARCHES))
    print(f"{sum(1 for r in retries if r)} of {STREAM_SEARCHES} searches were retried; "
          f"{len(acknowledged)} writes acknowledged")
    with httpx.Client(base_url=two_replicas, timeout=30) as client:
        for doc_id in acknowledged:
            assert client.get(f"/documents/{doc_id}").status_code == 200, doc_id
        found = {hit["id"] for hit in search(client, "documento", "pt", ["pt"], k=100).json()["results"]}
        assert set(acknowledged) <= found
    wait_until(lambda: len(replica_names()) == 2 and victim not in replica_names(), timeout=60)  # Serve replaced it


def test_the_application_builder_for_serve_run_and_kuberay(monkeypatch, tiny_artifact, tmp_path):
    from app.cluster.application import from_args

    monkeypatch.setenv("BABELSEARCH_MODEL_DIR", str(tiny_artifact))
    monkeypatch.setenv("BABELSEARCH_INDEX_DIR", str(tmp_path / "index"))
    application = from_args({"replicas": "2", "threads": "1"})
    assert type(application).__name__ == "Application"
    with pytest.raises(ValueError, match="unknown argument"):
        from_args({"replica": "2"})
