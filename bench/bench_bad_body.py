"""4 MB bad bodies against a running service: response size, time, and the server's RSS growth.

    python bench/bench_bad_body.py --url http://127.0.0.1:8000 --pid PID_OF_THE_SERVER

Shapes: a 4 MB query string, 400k audit queries, 1.4 M empty documents, a 4 MB string that is not JSON,
a list of 1 M numbers as embedding input. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

MB4 = 4 * 1024 * 1024


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def post(url: str, body: bytes) -> tuple[int, int, float]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                              "Authorization": "Bearer bench"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, len(payload), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, default=None, help="the server's process id, for its RSS")
    args = parser.parse_args()
    shapes = {
        "/search: a 4 MB query": ("/search", json.dumps({"query": "x" * MB4}).encode()),
        "/audit: 400k queries": ("/audit", json.dumps({"queries": [{"text": "q", "group": "g"}] * 400_000}).encode()),
        "/documents: 1.4 M empty objects": ("/documents", ("[" + ",".join(["{}"] * 1_400_000) + "]").encode()),
        "/search: 4 MB that is not JSON": ("/search", b"{" + b"x" * MB4),
        "/v1/embeddings: 1 M numbers": ("/v1/embeddings", json.dumps({"input": list(range(1_000_000))}).encode()),
    }
    print("| body | bytes sent | status | reply bytes | seconds | server RSS before → after MB |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (path, body) in shapes.items():
        before = rss_mb(args.pid)
        status, size, seconds = post(args.url + path, body)
        after = rss_mb(args.pid)
        memory = f"{before:.0f} → {after:.0f}" if before is not None else "n/a"
        print(f"| {name} | {len(body):,} | {status} | {size:,} | {seconds:.3f} | {memory} |", flush=True)


if __name__ == "__main__":
    main()
