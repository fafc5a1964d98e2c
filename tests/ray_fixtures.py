"""A real local Ray cluster for the Ray tests: `ray start --head --block` in a subprocess, on a free port, with
its own temp dir, stopped (the whole process group) when the session ends. No mocks: the tests talk to
it as a user's client would (``ray.init(address=...)`` or the CLI's ``--address``).

Use it through the session fixture ``ray_cluster`` (the tests import it: ``from tests.ray_fixtures import
ray_cluster``). Ray is an extra (``pip install .[ray]``); without it the tests that need it are skipped.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_CPUS = 2  # this machine's cores: the tests size actor pools and replicas to fit
START_TIMEOUT_S = 90


@dataclass
class RayCluster:
    address: str  # "127.0.0.1:PORT", what `--address` and ray.init(address=...) take
    temp_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    pytest.importorskip("ray", reason="Ray is an extra: pip install .[ray]")
    port = free_port()
    # short: Ray puts unix sockets under it, and their paths are limited to ~107 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # no drain on stop (30+ s -> ~3 s); no token auth, whatever ~/.ray/auth_token an earlier local instance left
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
               f"--num-cpus={CLUSTER_CPUS}", "--include-dashboard=false", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}"]
    log = open(temp_dir / "head.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    previous_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's clients, and the CLIs the tests start, as the head
    try:
        _wait_for(address, process, temp_dir)
        yield RayCluster(address, temp_dir)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        try:
            os.killpg(process.pid, signal.SIGTERM)  # `ray start --block` stops the cluster's processes on SIGTERM
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        if previous_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous_auth


def _wait_for(address: str, process: subprocess.Popen, temp_dir: Path) -> None:
    """Until the head answers a client (about 7 s here), or the head process exited."""
    import ray

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}: {(temp_dir / 'head.log').read_text()[-2000:]}")
        try:
            ray.init(address=address, log_to_driver=False)
            ray.shutdown()
            return
        except Exception:  # not up yet
            time.sleep(1)
    raise RuntimeError(f"the Ray head at {address} did not answer within {START_TIMEOUT_S} s")


def connect(cluster: RayCluster) -> None:
    """Connect this process to the test cluster (idempotent)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False)
