"""Search-path latency, HNSW recall and ingest throughput of the index layer, on real multilingual text.

    python bench/bench_search.py [--sizes 10000 100000] [--queries 200] [--index-types flat hnsw]
                                 [--model artifacts/models/e5-small-base] [--precision int8] [--threads 2]

Passages (in this order, interleaved across languages so every prefix is mixed): XQuAD-R sentences
(11 languages, ~13k), NTREX-128 sentences (11 languages, ~22k), then squad2-fi questions (Finnish + English
back-translation) to reach 100k. Queries: XQuAD-R questions, round-robin over the 11 languages.

Passage embeddings are cached under var/bench/<encoder fingerprint>/ (1000 texts per .npy file), so only
the first run encodes; the table says how many were encoded vs loaded. Collections are then built from the
cached vectors (store + index throughput) and searched with queries encoded one at a time, as /search does:
"/search path" = query encoding + shard search + merge (+ document fetch), in-process.
Recall@10 is the share of the exact top 10 that the approximate index returns (evaluation.metrics).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
CACHE_CHUNK = 1000
NTREX = {"arb": "ar", "deu": "de", "ell": "el", "eng-US": "en", "hin": "hi", "rus": "ru", "spa": "es", "tha": "th",
         "tur": "tr", "vie": "vi", "zho-CN": "zh"}


def interleave(columns: list[list]) -> list:
    out = []
    for row in range(max(len(column) for column in columns)):
        out += [column[row] for column in columns if row < len(column)]
    return out


def xquad(data: Path) -> tuple[list[tuple], list[tuple]]:
    """(passages, queries) as (id, text, language) — sentences and questions of every XQuAD-R language."""
    sentences, questions = [], []
    for path in sorted((data / "xquad-r").glob("*.json")):
        if path.stem == "split":
            continue
        language = path.stem
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        paragraphs = [(a, p, paragraph) for a, article in enumerate(articles) for p, paragraph in enumerate(article["paragraphs"])]
        sentences.append([(f"xq-{language}-{a}-{p}-{s}", text, language)
                          for a, p, paragraph in paragraphs for s, text in enumerate(paragraph["sentences"])])
        questions.append([(qa["id"], qa["question"], language) for _, _, paragraph in paragraphs for qa in paragraph["qas"]])
    return interleave(sentences), interleave(questions)


def ntrex(data: Path) -> list[tuple]:
    columns = []
    for code, language in NTREX.items():
        lines = (data / "train" / "ntrex128" / f"newstest2019-ref.{code}.txt").read_text(encoding="utf-8").splitlines()
        columns.append([(f"ntrex-{language}-{i}", line, language) for i, line in enumerate(lines) if line.strip()])
    return interleave(columns)


def squad_fi_questions(data: Path, limit: int) -> list[tuple]:
    out = []
    path = data / "train" / "squad2-fi" / "squad2_train_fi_enbt.paragraphs.jsonl"
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            for q, question in enumerate(row["questions"]):
                for language, key in (("fi", "fi"), ("en", "en_bt")):
                    if question.get(key, "").strip():
                        out.append((f"sq-{row['doc']}-{row['para']}-{q}-{language}", question[key], language))
            if len(out) >= limit:
                return out[:limit]
    return out


def indexable(rows: list[tuple]) -> list[tuple]:
    """Rows the collection accepts (XQuAD-R has a few "sentences" that are a lone quotation mark)."""
    from indexes.text import check_passage

    def ok(text: str) -> bool:
        try:
            check_passage(text)
            return True
        except ValueError:
            return False

    return [row for row in rows if ok(row[1])]


def passage_pool(data: Path, size: int) -> tuple[list[tuple], list[tuple], dict]:
    sentences, questions = xquad(data)
    pool = sentences + ntrex(data)
    composition = {"XQuAD-R sentences": min(len(sentences), size), "NTREX-128 sentences": max(0, min(len(pool), size) - len(sentences))}
    if len(pool) < size:
        extra = squad_fi_questions(data, size - len(pool))
        composition["squad2-fi questions"] = len(extra)
        pool += extra
    return pool[:size], questions, {name: n for name, n in composition.items() if n}


class CachedEncoder:
    """The real encoder, except that passages found in the embedding cache are not encoded again."""

    def __init__(self, encoder, texts: list[str], vectors: np.ndarray) -> None:
        self._encoder = encoder
        self._rows = {text: row for row, text in enumerate(texts)}
        self._vectors = vectors

    def encode(self, texts, kind, **kwargs):
        if kind == "passage" and all(text in self._rows for text in texts):
            return self._vectors[[self._rows[text] for text in texts]]
        return self._encoder.encode(texts, kind, **kwargs)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


def cached_embeddings(encoder, texts: list[str], cache: Path) -> tuple[np.ndarray, int]:
    """Passage vectors of ``texts`` through the evaluation's embedding cache, in chunks so an interrupted run
    keeps what it encoded; returns (vectors, how many were encoded rather than loaded)."""
    from tqdm.auto import tqdm

    from evaluation.cache import cache_path, cached_encode

    parts, encoded = [], 0
    for start in tqdm(range(0, len(texts), CACHE_CHUNK), desc="passage embeddings", unit="k"):
        chunk = texts[start : start + CACHE_CHUNK]
        encoded += 0 if cache_path(encoder, chunk, "passage", cache).is_file() else len(chunk)
        parts.append(cached_encode(encoder, chunk, "passage", cache))
    return np.concatenate(parts), encoded


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build(directory: Path, encoder, index_type: str, pool: list[tuple], chunk: int = 5000):
    from indexes import Collection, Document

    shutil.rmtree(directory, ignore_errors=True)
    collection = Collection.open(directory, encoder, index_type=index_type)
    start = time.perf_counter()
    for offset in range(0, len(pool), chunk):
        collection.add([Document(i, text, language) for i, text, language in pool[offset : offset + chunk]], batch_size=chunk)
    return collection, time.perf_counter() - start


def measure_search(collection, encoder, queries: list[tuple], k: int = 10, source=None, method: str = "none") -> dict:
    """Latency of encode + search per query; with a calibration ``source`` the calibrator is resolved per
    query from the collection's statistics, as the service does (the query's given language)."""
    def search(vector, language):
        if source is None or method == "none":
            return collection.search(vector, k=k)
        calibrator, _ = source.resolve(method, collection.statistics(), language)
        return collection.search(vector, k=k, calibrator=calibrator, query_language=language)

    for _, text, language in queries[:5]:  # warm-up (and the norm ranges of each calibrated shard)
        search(encoder.encode([text], "query")[0], language)
    encode_ms, search_ms, rankings = [], [], []
    for _, text, language in queries:
        t0 = time.perf_counter()
        vector = encoder.encode([text], "query")[0]
        t1 = time.perf_counter()
        hits = search(vector, language)
        t2 = time.perf_counter()
        encode_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        rankings.append([hit.id for hit in hits])
    total = [a + b for a, b in zip(encode_ms, search_ms)]
    return {"search": search_ms, "total": total, "encode": encode_ms, "rankings": rankings}


def recall_against(rankings: list[list[str]], exact: list[list[str]], k: int = 10) -> float:
    from evaluation.metrics import mean, recall_at_k

    values = []
    for found, truth in zip(rankings, exact):
        positions = {doc_id: rank for rank, doc_id in enumerate(found, start=1)}
        ranks = [positions[doc_id] for doc_id in truth[:k] if doc_id in positions]
        values.append(recall_at_k(ranks, k, n_relevant=len(truth[:k])))
    return mean(values)


def ingest_rate(encoder, pool: list[tuple], n: int, directory: Path) -> float:
    """Passages/s of Collection.add with real encoding (encode + store + index), on ``n`` passages."""
    from indexes import Collection, Document

    shutil.rmtree(directory, ignore_errors=True)
    sample = pool[:n]
    with Collection.open(directory, encoder) as collection:
        start = time.perf_counter()
        for offset in range(0, n, 256):
            collection.add([Document(i, text, language) for i, text, language in sample[offset : offset + 256]], batch_size=32)
        rate = n / (time.perf_counter() - start)
    shutil.rmtree(directory, ignore_errors=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts/models/e5-small-base"))
    parser.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-types", nargs="+", default=["flat", "hnsw"], choices=("flat", "hnsw", "ivf"))
    parser.add_argument("--ingest-sample", type=int, default=1000, help="passages encoded fresh to time ingest (0 = skip)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", default=str(ROOT / "var" / "bench"), help="embedding cache + scratch indexes")
    parser.add_argument("--hnsw-ef-search", type=int, default=None, help="override efSearch (default: the index's)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=None, help="override efConstruction")
    parser.add_argument("--encode-only", action="store_true", help="fill the embedding cache and stop (e.g. under nice)")
    parser.add_argument("--calibration", nargs="+", default=["none"], choices=("none", "center", "subspace"),
                        help="rank with these methods, side by side (recall: against the exact ranking of the same method)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import faiss

    from encoder import OnnxEncoder

    faiss.omp_set_num_threads(args.threads)
    import indexes.shards

    if args.hnsw_ef_search:
        indexes.shards.HNSW_EF_SEARCH = args.hnsw_ef_search
    if args.hnsw_ef_construction:
        indexes.shards.HNSW_EF_CONSTRUCTION = args.hnsw_ef_construction
    encoder = OnnxEncoder(args.model, precision=args.precision, threads=args.threads)
    work = Path(args.work)
    pool, questions, composition = passage_pool(Path(args.data), max(args.sizes))
    queries = questions[: args.queries]
    vectors, encoded = cached_embeddings(encoder, [text for _, text, _ in pool], work)
    if args.encode_only:
        print(f"{encoded} passages encoded, {len(pool) - encoded} were cached: {work / encoder.fingerprint}")
        return
    fast = CachedEncoder(encoder, [text for _, text, _ in pool], vectors)
    pool = indexable(pool)  # after the embedding cache, whose chunks are keyed on the unfiltered texts
    from encoder.calibration import ArtifactCalibration, CalibrationSource

    artifact = ArtifactCalibration.load(args.model, encoder.dim)
    source = CalibrationSource(artifact.statistics.get(args.precision) if artifact else None, encoder.dim,
                               artifact.subspace_rank if artifact else 10)

    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())  # the machine may be shared: say how busy it was
    rows = []
    for size in sorted(args.sizes):
        exact = {}
        for index_type in sorted(args.index_types, key=lambda t: t != "flat"):  # flat first: the reference
            directory = work / "scratch" / f"{size}-{index_type}"
            collection, seconds = build(directory, fast, index_type, pool[:size])
            structures = sorted(set(collection.manifest["shards"].values()))
            name = index_type + ("" if structures == [index_type] else f" ({'+'.join(structures)})")
            for method in args.calibration:
                result = measure_search(collection, encoder, queries, source=source, method=method)
                if index_type == "flat":
                    exact[method] = result["rankings"]
                recall = recall_against(result["rankings"], exact[method]) if method in exact else float("nan")
                rows.append((size, name, method, size / seconds, result, recall))
                print(f"done: {size} {index_type} {method}", file=sys.stderr)
            collection.close()
            shutil.rmtree(directory, ignore_errors=True)
    rate = ingest_rate(encoder, pool, args.ingest_sample, work / "scratch" / "ingest") if args.ingest_sample else None

    print(f"\nmodel {Path(args.model).name} ({args.precision}, {encoder.fingerprint}), {args.threads} threads, "
          f"{os.cpu_count()} cores; passages: {', '.join(f'{n} {name}' for name, n in composition.items())}; "
          f"passage embeddings: {encoded} encoded now, {len(pool) - encoded} loaded from cache; "
          f"{len(queries)} XQuAD-R questions in {len({q[2] for q in queries})} languages, k=10; "
          f"load average before/after: {load_before} / {'/'.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| passages | index | calibration | store + index passages/s | search p50 ms | search p99 ms "
          "| /search path p50 ms | /search path p99 ms | recall@10 vs exact |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for size, name, method, build_rate, result, recall in rows:
        print(f"| {size:,} | {name} | {method} | {build_rate:,.0f} | {statistics.median(result['search']):.2f} "
              f"| {percentile(result['search'], 99):.2f} | {statistics.median(result['total']):.1f} "
              f"| {percentile(result['total'], 99):.1f} | {recall:.3f} |")
    query_ms = [ms for *_, result, _ in rows for ms in result["encode"]]
    print(f"\nquery encoding alone: p50 {statistics.median(query_ms):.1f} ms, p99 {percentile(query_ms, 99):.1f} ms")
    if rate is not None:
        print(f"ingest with encoding (Collection.add: encode + SQLite + flat shard, {args.ingest_sample} passages, "
              f"chunks of 256): {rate:.1f} passages/s")


if __name__ == "__main__":
    main()
