"""``python -m app.cluster --replicas 2``: babelsearch on Ray Serve, replicated (``app.cluster``).

Reads the same ``BABELSEARCH_*`` settings as ``python -m app`` (model, index, seed collection, API key,
limits), starts a local Ray cluster or joins one (``--address``), deploys the application, prints the
ready line once every replica is ready (the seed is in), and serves until Ctrl-C or SIGTERM, then removes
the application (and stops Serve if nothing else runs on it).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from app.__main__ import read_settings
from app.cluster.process import LOG_LEVEL_VARIABLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cluster", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--replicas", type=int, default=2, help="search replicas (default 2)")
    parser.add_argument("--encoders", type=int, help="encoder replicas (default: as many as --replicas)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per encoder replica (default "
                                                    "BABELSEARCH_THREADS, or 1 when that is 0 or unset)")
    parser.add_argument("--address", help="a running Ray cluster (`auto`: the one `ray start` started here); "
                                          "default: start a local one for this command")
    parser.add_argument("--host", default="127.0.0.1", help="interface the Serve HTTP proxy binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    try:
        from ray import serve
    except ImportError:
        print("error: Ray is not installed; it is an extra: pip install '.[ray]'", file=sys.stderr)
        return 2
    settings = read_settings()
    if settings is None:
        return 2
    from app.cluster.application import APP_NAME, build_application, ray_session
    from indexes.ray_session import RayClusterError

    threads = args.threads if args.threads is not None else settings.threads or 1
    encoders = args.encoders or args.replicas
    try:
        application = build_application(settings, args.replicas, encoders, threads, args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ[LOG_LEVEL_VARIABLE] = args.log_level
    try:
        with ray_session(args.address):
            serve.start(http_options={"host": args.host, "port": args.port})
            try:
                serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)  # once every replica is ready
                status = serve.get_deployment_handle("Writer", APP_NAME).status.remote().result()
                print(f"ready on http://{args.host}:{args.port}: {count(args.replicas, 'search replica')}, "
                      f"{count(encoders, 'encoder replica')} x {count(threads, 'thread')}, one writer; "
                      f"{count(status['documents'], 'document')}, model {status['model']}", flush=True)
                wait_for_a_signal()
            finally:
                shut_down(serve, APP_NAME)
    except RayClusterError as exc:  # no cluster at --address
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a deployment failed to start: Serve's message says which and why
        print(f"error: the application did not start: {exc}", file=sys.stderr)
        return 1
    return 0


def wait_for_a_signal() -> None:
    """Until Ctrl-C or SIGTERM (before the ready line, either interrupts the start; the cleanup runs too)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def shut_down(serve, app_name: str) -> None:
    """Remove this application; stop Serve too unless another application runs on it."""
    try:
        serve.delete(app_name)
        if not serve.status().applications:
            serve.shutdown()
    except Exception as exc:  # Ctrl-C twice, or the cluster is gone
        print(f"warning: shutting down Serve: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
