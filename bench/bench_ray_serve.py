"""Replicated serving (app.cluster): /search throughput at 32 concurrent clients with 1 and with 2 search
replicas, side by side in one run; the target is 2 one-thread replicas >= 1.6x one.

    .venv/bin/python bench/bench_ray_serve.py                   # 30 s a configuration (~3 min in all)
    .venv/bin/python bench/bench_ray_serve.py --seconds 5       # a quick look

What scales: configuration N has N search replicas *and* N encoder replicas of --threads ONNX Runtime
threads each (1: "one-thread replicas"), and one writer, as `python -m app.cluster --replicas N --threads 1`
deploys them. The script starts a local Ray cluster in this process (no dashboard), the Serve HTTP proxy on
127.0.0.1 (a free port), deploys configuration 1, measures, removes it, deploys configuration 2 on the same
index, measures, and shuts everything down (on Ctrl-C too); it sends traffic to nothing else.

Service: the production configuration (the recommended model in int8, calibration center, warm-up on;
every BABELSEARCH_ variable of the calling shell is dropped), the demo collection (demo/collection.jsonl)
seeded once into a temporary index. Load: wrk with one thread, closed loop, --clients connections, each
POSTing /search (k=10) with XQuAD-R questions (../shared/data/xquad-r, the languages interleaved; the demo
passages' first sentences without it), after a 429 waiting its Retry-After (bench/bench_load.lua); a few
seconds at 8 connections warm each configuration up first. requests/s counts 2xx answers; p50/p99 are
wrk's. RSS: each Ray actor process's resident memory after its run (from /proc, by the process title Ray
gives it). wrk, the Ray proxy and every replica share this machine's cores: the figures mean most on a
machine with cores to spare (docs/scaling.md, "Throughput").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_load import LUA, free_port, git_revision, questions  # noqa: E402

DEFAULT_MODEL = ROOT / "artifacts" / "models" / "e5-small-recommended"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "xquad-r"
DEMO = ROOT / "demo" / "collection.jsonl"
TARGET = 1.6
ACTORS = ("SearchReplica", "Encoder", "Writer", "ProxyActor")  # the process titles' last part


def query_bodies(data: Path, path: Path) -> int:
    if (data / "en.json").is_file():
        texts = questions(data, per_language=40)
    else:  # no XQuAD-R here: the demo passages' first sentences
        texts = [json.loads(line)["text"].split(". ")[0] for line in DEMO.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps({"query": text, "k": 10}, ensure_ascii=False) + "\n" for text in texts),
                    encoding="utf-8")
    return len(texts)


def wrk(args, port: int, bodies: Path, clients: int, seconds: float) -> dict:
    argv = [args.wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(LUA),
            f"http://127.0.0.1:{port}", "--", str(bodies), "/search"]
    result = subprocess.run(argv, env={**os.environ, "BENCH_LOAD_RETRY_AFTER": "1"}, capture_output=True, text=True,
                            timeout=seconds + 120)
    line = next((line for line in result.stdout.splitlines() if line.startswith("BENCH_LOAD ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"error: wrk exited with {result.returncode}: {' '.join(argv)}\n{result.stdout}\n"
                         f"{result.stderr}")
    summary = json.loads(line.removeprefix("BENCH_LOAD "))
    ok, duration = summary["requests"] - summary["non2xx"], summary["duration_us"] / 1e6
    errors = sum(summary[key] for key in ("timeouts", "connect_errors", "read_errors", "write_errors"))
    return {"requests_per_s": ok / duration, "p50_ms": summary["p50_us"] / 1000, "p99_ms": summary["p99_us"] / 1000,
            "non2xx": summary["non2xx"], "n429": summary["n429"], "errors": errors}


def actor_rss_mb() -> dict[str, list[float]]:
    """Resident MB of this machine's Ray actor processes, by kind ("ray::ServeReplica:babelsearch:Encoder")."""
    found: dict[str, list[float]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            status = (proc / "status").read_text()
        except OSError:
            continue
        # "ray::ServeReplica:babelsearch:Encoder", "ray::ProxyActor.ready": a method name while it runs one
        kind = title.removeprefix("ray::").split(".")[0].split(":")[-1] if title.startswith("ray::") else None
        if kind in ACTORS:
            kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            found.setdefault(kind, []).append(kb / 1024)
    return found


def measure(args, serve, settings, replicas: int, port: int, bodies: Path) -> dict:
    from app.cluster.application import APP_NAME, build_application

    started = time.monotonic()
    serve.run(build_application(settings, replicas=replicas, encoders=replicas, threads=args.threads,
                                log_level="warning"), name=APP_NAME, route_prefix="/")
    deployed_s = time.monotonic() - started
    print(f"bench_ray_serve: {replicas} replica(s) ready in {deployed_s:.0f} s; warming up", file=sys.stderr,
          flush=True)
    wrk(args, port, bodies, 8, args.warmup)
    row = {"replicas": replicas, "encoders": replicas, "deploy_s": deployed_s,
           **wrk(args, port, bodies, args.clients, args.seconds), "rss_mb": actor_rss_mb()}
    serve.delete(APP_NAME)  # its replicas stopped, the writer's lock released, before the next deploy
    return row


def table(args, rows: list[dict]) -> str:
    lines = [f"| search replicas | encoder replicas x threads | requests/s at c={args.clients} | p50 ms | p99 ms | "
             "non-2xx (429s) | RSS MB: search replica / encoder / writer |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        rss = row["rss_mb"]
        memory = " / ".join(f"{max(rss.get(kind, [0])):.0f}" for kind in ("SearchReplica", "Encoder", "Writer"))
        bad = f"{row['non2xx']} ({row['n429']})" + (f" +{row['errors']} socket errors" if row["errors"] else "")
        lines.append(f"| {row['replicas']} | {row['encoders']} x {args.threads} | {row['requests_per_s']:.1f} | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {bad} | {memory} |")
    one, two = rows[0]["requests_per_s"], rows[1]["requests_per_s"]
    ratio = two / one if one else float("inf")
    lines.append(f"\n- 2 replicas >= {TARGET}x 1 at c={args.clients}: {two:.1f} vs {one:.1f} requests/s "
                 f"({ratio:.2f}x) {'✓' if ratio >= TARGET else '✗'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="XQuAD-R, for the queries")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=5, help="seconds at 8 connections before each")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per encoder replica")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = parser.parse_args(argv)
    if not shutil.which(args.wrk):
        parser.error("wrk not found: apt-get install -y wrk (or pass --wrk)")
    from ray import serve

    from app.cluster.application import ray_session
    from app.config import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-ray-serve-"))
    bodies = work / "bodies.jsonl"
    count = query_bodies(args.data, bodies)
    for name in [name for name in os.environ if name.startswith("BABELSEARCH_")]:
        del os.environ[name]  # the production defaults, not the calling shell's settings
    settings = Settings(model_dir=args.model, index_dir=work / "index", seed_collection=DEMO, precision="int8")
    port = free_port()
    try:
        with ray_session(None, log_to_driver=False):
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            try:
                rows = [measure(args, serve, settings, replicas, port, bodies) for replicas in (1, 2)]
            finally:
                serve.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n**Replicated /search** ({git_revision()}, {os.cpu_count()} cores shared by wrk, the Ray proxy and "
          f"every replica; {args.model.name} int8, demo collection, {count} queries, {args.seconds:g} s at "
          f"c={args.clients} after {args.warmup:g} s at c=8)\n")
    print(table(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
