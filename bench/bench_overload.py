"""Health under load: N clients search as fast as they can while one client polls /livez.

Against a running service (``make serve``), e.g.
``.venv/bin/python bench/bench_overload.py --url http://127.0.0.1:8000 --clients 256 --seconds 20``.
Prints /livez latency percentiles and the search status counts (200s, and 429s once encoder work is full).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections import Counter

import httpx

QUERIES = ["Wann landeten zum ersten Mal Menschen auf dem Mond?", "How tall is the Eiffel Tower?",
           "エッフェル塔の高さは？", "¿Cómo funcionan las vacunas?", "Что такое фотосинтез?"]


async def searcher(client: httpx.AsyncClient, stop: float, statuses: Counter, i: int) -> None:
    while time.monotonic() < stop:
        try:
            response = await client.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 5})
            statuses[response.status_code] += 1
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1


def prober(url: str, seconds: float, out) -> None:
    """In its own process, so that the load generator's event loop does not delay the measurement."""
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            start = time.perf_counter()
            response = client.get("/livez")
            latencies.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
            time.sleep(0.05)
    out.put(latencies)


async def load(url: str, clients: int, seconds: float, statuses: Counter) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(searcher(client, stop, statuses, i) for i in range(clients)))


def main(url: str, clients: int, seconds: float) -> None:
    statuses: Counter = Counter()
    out = multiprocessing.Queue()
    probe = multiprocessing.Process(target=prober, args=(url, seconds, out))
    probe.start()
    asyncio.run(load(url, clients, seconds, statuses))
    latencies = sorted(out.get(timeout=120))
    probe.join()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"{clients} clients, {seconds:.0f} s: /livez n={len(latencies)} p50 {statistics.median(latencies):.1f} ms "
          f"p99 {p99:.1f} ms max {latencies[-1]:.1f} ms; /search {dict(statuses)} "
          f"({statuses[200] / seconds:.1f} answered/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    main(args.url, args.clients, args.seconds)
