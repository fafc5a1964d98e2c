"""A Ray session for the commands that use Ray (``python -m indexes build --ray``, ``python -m app.cluster``, the
benchmarks): connect to a cluster by address, or start a local instance for the duration. Ray is an extra
(``pip install .[ray]``), imported only when one of them runs."""
from __future__ import annotations

import logging
import os
import secrets
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from indexes.documents import MissingExtraError

CONNECT_TIMEOUT_S = 5.0
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class RayClusterError(RuntimeError):
    """Ray could not do the work (no cluster at the address, an actor failed); the message says why."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError("this command needs Ray, an extra: pip install .[ray]") from None
    return ray


@contextmanager
def ray_session(address: str | None, cpus: int | None = None, log_to_driver: bool = False,
                logging_level: int = logging.ERROR) -> Iterator[None]:
    """Connected to the cluster at ``address``, or to a new local instance (``cpus`` CPUs; None: all), for the
    duration. A session this process already holds (a notebook, a benchmark) is used as it is and left open.
    ``log_to_driver``: the workers' output printed here too (off: the caller reports progress itself)."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    options = {"log_to_driver": log_to_driver, "logging_level": logging_level}
    with ExitStack() as stack:
        if address:
            connect(ray, address, options)
        else:
            stack.enter_context(ephemeral_auth_token())
            start_local(ray, cpus, options)
        stack.callback(ray.shutdown)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        yield


def connect(ray, address: str, options: dict) -> None:
    check_reachable(address)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # RayError: token refused
        raise RayClusterError(f"cannot connect to the Ray cluster at {address}: {exc}") from None


def start_local(ray, cpus: int | None, options: dict) -> None:
    try:  # "local": never attach to some other cluster this machine happens to run (or one recorded in /tmp/ray)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise RayClusterError(f"cannot start a local Ray instance: {exc}") from None


@contextmanager
def ephemeral_auth_token() -> Iterator[None]:
    """A token of its own for a local instance, in the environment its processes inherit. Left alone, a new
    local Ray instance with no token configured writes one to ~/.ray/auth_token for good, and every later
    `ray start` on the machine then requires it (clients of those clusters that lack it are refused)."""
    configured = any(name in os.environ for name in AUTH_VARIABLES) or (Path.home() / ".ray" / "auth_token").is_file()
    if configured:
        yield
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # Ray's own tokens: 256 random bits
    try:
        yield
    finally:
        os.environ.pop("RAY_AUTH_TOKEN", None)


def check_reachable(address: str) -> None:
    """Fail fast on a host:port nobody listens on: ``ray.init`` retries one for minutes without a word."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():  # "auto" and the like: left to Ray
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayClusterError(f"cannot connect to a Ray cluster at {address} ({exc.strerror or exc}); start one "
                              "with `ray start --head` or check --address") from None


