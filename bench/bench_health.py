"""Health while busy: /livez and /readyz latency during the startup seed and during a large ingest.

Start it right after the service (``make serve``, ``python -m app`` or ``docker compose up``): it probes
/livez and /readyz every 50 ms (3 s timeout, the probe a health check makes) until /readyz says ready,
then posts ``--ingest`` passages (the demo collection's texts under new ids, 64 per request) with the API
key while it keeps probing. Prints latency percentiles per phase and the server's resident memory
(``process_resident_memory_bytes`` from /metrics), e.g.

    .venv/bin/python bench/bench_health.py --url http://127.0.0.1:8000 --api-key change-me --ingest 2000

Probes run in their own process, so the load generator never delays a measurement.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import time
from pathlib import Path

import httpx

DEMO = Path(__file__).resolve().parents[1] / "demo" / "collection.jsonl"
PROBE_TIMEOUT = 3.0
BATCH = 64


def probe(url: str, stop, out) -> None:
    """Until ``stop`` is set: every 50 ms one /livez and one /readyz; (phase, path, ms, status) per probe."""
    results = []
    with httpx.Client(base_url=url, timeout=PROBE_TIMEOUT) as client:
        while not stop.is_set():
            for path in ("/livez", "/readyz"):
                start = time.perf_counter()
                try:
                    status = client.get(path).status_code
                except httpx.TimeoutException:
                    status = "timeout"
                except httpx.TransportError:
                    status = "down"  # not listening yet
                results.append((path, (time.perf_counter() - start) * 1000, status, time.monotonic()))
            time.sleep(0.05)
    out.put(results)


def rss_mb(client: httpx.Client) -> str:
    match = re.search(r"^process_resident_memory_bytes (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return f"{float(match.group(1)) / 1e6:.0f} MB" if match else "not reported"


def percentiles(values: list[float]) -> str:
    if not values:
        return "no answers"
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return f"n={len(values)} p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {values[-1]:.1f} ms"


def report(results, phases: list[tuple[str, float, float]]) -> dict:
    summary = {}
    for name, start, end in phases:
        for path in ("/livez", "/readyz"):
            rows = [r for r in results if r[0] == path and start <= r[3] < end and r[2] != "down"]
            answered = [ms for _, ms, status, _ in rows if status != "timeout"]
            timeouts = sum(1 for r in rows if r[2] == "timeout")
            print(f"{name:>8} {path:8} {percentiles(answered)}, {timeouts} without an answer in {PROBE_TIMEOUT:.0f} s")
            summary[f"{name} {path}"] = {"answered_ms": sorted(answered), "timeouts": timeouts}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None, help="BABELSEARCH_API_KEY (needed for --ingest)")
    parser.add_argument("--ingest", type=int, default=0, help="passages to post once ready")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, default=None, help="also write the latencies here")
    args = parser.parse_args()

    stop, out = multiprocessing.Event(), multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(args.url, stop, out))
    began = time.monotonic()
    prober.start()
    phases = []
    with httpx.Client(base_url=args.url, timeout=120) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - began > args.startup_timeout:
                raise SystemExit("the service did not become ready")
            time.sleep(0.2)
        ready = time.monotonic()
        phases.append(("startup", began, ready))
        print(f"ready {ready - began:.1f} s after the bench started; RSS {rss_mb(client)}")
        if args.ingest:
            texts = [json.loads(line)["text"] for line in DEMO.read_text(encoding="utf-8").splitlines()]
            langs = [json.loads(line)["language"] for line in DEMO.read_text(encoding="utf-8").splitlines()]
            docs = [{"id": f"bench-health-{i}", "text": texts[i % len(texts)], "language": langs[i % len(texts)]}
                    for i in range(args.ingest)]
            headers = {"Authorization": f"Bearer {args.api_key}"}
            for start in range(0, len(docs), BATCH):
                response = client.post("/documents", json=docs[start : start + BATCH], headers=headers)
                response.raise_for_status()
            done = time.monotonic()
            phases.append(("ingest", ready, done))
            print(f"ingested {len(docs)} passages in {done - ready:.1f} s ({len(docs) / (done - ready):.0f}/s); "
                  f"RSS {rss_mb(client)}")
    stop.set()
    results = out.get(timeout=60)
    prober.join()
    summary = report(results, phases)
    if args.json:
        args.json.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
