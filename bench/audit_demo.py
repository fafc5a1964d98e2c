"""The service's own language-bias audit on the demo collection, one row per model artifact.

    python bench/audit_demo.py --model artifacts/models/e5-small-base --model runs/xy/artifact [--precision int8]
                               [--calibration none center subspace]

For each model: a fresh service (the real app, in-process, default settings) indexes demo/collection.jsonl,
then answers ``POST /audit`` for each calibration method — with demo/queries.jsonl (15 questions × 12
languages, each relevant to its topic's 12 passages; languages detected, as /search does) and as a
self-audit. Prints a Markdown table, one row per model and method.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from evaluation.jsonl import read_jsonl_rows

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"


def wait_ready(client: TestClient, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while (ready := client.get("/readyz")).status_code != 200:  # seeding and warm-up run in the background
        if "failed" in ready.json()["detail"] or time.monotonic() > deadline:
            raise SystemExit(f"service not ready: {ready.json()['detail']}")
        time.sleep(0.5)


def audit(model: Path, precision: str, methods: list[str]) -> dict[str, tuple[dict, dict]]:
    # The questions without their language: the service detects it, as it does for /search.
    queries = [{key: value for key, value in row.items() if key != "language"}
               for _, row in read_jsonl_rows(DEMO / "queries.jsonl")]
    out = {}
    with tempfile.TemporaryDirectory() as index_dir:
        settings = Settings(model_dir=model, precision=precision, index_dir=Path(index_dir),
                            seed_collection=DEMO / "collection.jsonl")
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            for method in methods:
                with_queries = client.post("/audit", json={"queries": queries, "calibration": method}).json()
                self_audit = client.post("/audit", json={"calibration": method}).json()
                out[method] = (with_queries, self_audit)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, type=Path)
    parser.add_argument("--name", action="append", default=None)
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--calibration", nargs="+", default=["none", "center", "subspace"],
                        choices=["none", "center", "subspace"])
    args = parser.parse_args()
    names = args.name or [str(m) for m in args.model]
    print(f"\ndemo collection: 180 passages (15 topics x 12 languages), precision {args.precision}\n")
    print("| model | calibration | rank distance | mAP | recall@10 | query-language passage first (chance) "
          "| zh queries: zh share of top 10 | self-audit rank distance | self-audit mAP | queries that fell back |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, model in zip(names, args.model):
        for method, (q, s) in audit(model, args.precision, args.calibration).items():
            first = q["same_language_first"]
            print(f"| {name} | {method} | {q['rank_distance']:.1f} | {q['map']:.3f} | {q['recall_at_k']:.3f} "
                  f"| {first['rate']:.2f} ({first['chance']:.2f}) | {q['per_language']['zh']['own_language_top_k_share']:.2f} "
                  f"| {s['rank_distance']:.1f} | {s['map']:.3f} | {q['calibration'].get('queries_fallback', 0)} |",
                  flush=True)


if __name__ == "__main__":
    main()
