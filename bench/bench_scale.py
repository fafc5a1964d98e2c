"""Index types at scale (up to 1M passages): latency, recall@10, build time, bytes per passage and RSS.

    python bench/bench_scale.py [--size 1000000] [--queries 500] [--threads 2]
                                [--variants flat hnsw ivf ivf-sq8 hnsw-sq8] [--per-language flat hnsw ivf ivf-sq8]
                                [--model artifacts/models/e5-small-base] [--precision int8] [--force]

Vectors. 1M real passages would take ~1 hour to encode on 2 cores, so the passages are **resampled from real
encoded vectors**: the ~100k passage embeddings bench/bench_search.py caches under var/bench/<fingerprint>/
(XQuAD-R and NTREX-128 sentences, squad2-fi questions: 12 languages; by default the base model
e5-small-base at int8, ``--model``). Each synthetic vector is

    normalise(p + t (q - p) + s d_p L_lang z),   t ~ U(0, 1/2),  z ~ N(0, I_384)

for a parent p (every real vector is a parent size/100k times, in a fixed random order; the synthetic vector
keeps p's language), q a random one of p's 10 nearest real vectors of the same language, d_p the distance
from p to its nearest one (floored at cosine 0.995, so duplicate texts still get distinct children) and
L_lang L_lang^T the covariance of p's language scaled to unit trace. So a synthetic vector sits between two
real neighbours, with noise in the directions the language's vectors vary in, as large as the local
spacing. The one free scale s is fitted (bisection) so that the median nearest-neighbour cosine inside the
synthetic set equals that inside the real 100k set; the script prints both distributions (percentiles and
the Kolmogorov-Smirnov distance) so the match can be judged. Queries: real XQuAD-R questions (round-robin
over 11 languages), encoded one at a time with the model. Ground truth: exact inner-product top 10 over the
synthetic set, computed once in batch (numpy). Everything is cached under var/bench/scale/<key>/; the key
is the options, not the model's fingerprint, so vectors cached from an earlier model are reused (the log
says so, the table names their encoder) until ``--force-data``.

Indexes. flat / hnsw / ivf are built with indexes/shards.py itself (``Shard._new_index``: IDMap2,Flat;
IDMap2,HNSW32,Flat with efConstruction 80; IVF<sqrt n>,Flat) and configured by ``Shard`` (efSearch 128,
nprobe = nlist/8, hashtable direct map). The compressed variants use the same wrappers and parameter rules:
ivf-sq8 = IVF<sqrt n>,SQ8 (8-bit scalar quantizer, residuals), hnsw-sq8 = IDMap2,HNSW32,SQ8. IVF training
gets a random sample of 256 vectors per list (what FAISS's k-means subsamples to anyway).

Layouts. ``single``: one index over all passages. ``per-language``: one shard per language, as the service
keeps them; a query searches every shard and the hits are merged by score, as /search does.

Measurement. Every (variant, layout) is built in one subprocess (build time with ``--threads`` FAISS threads,
its peak RSS, the index file size) and searched in a fresh subprocess that only loads the saved index files,
as the service does on open (its peak RSS = what serving that index costs). Queries are searched one at a
time with ``Shard.search`` inside ``indexes.shards.single_threaded()``, exactly the call /search makes,
then merged; the SQLite fetch of the 10 hits (~0.3 ms) and query encoding are not included. Settings other
than the service's defaults (efSearch, nprobe share, 2 OpenMP threads for flat) are listed as extra rows.
Each subprocess is bounded by ``--step-timeout``; finished (variant, layout) results are cached, so an
interrupted run resumes (``--force`` redoes them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

REAL_SIZE = 100_000
NN_SAMPLE = 1000  # points whose nearest neighbour is measured for the similarity-distribution check
TRAIN_PER_LIST = 256  # FAISS k-means subsamples to 256 points per centroid
ADD_CHUNK = 50_000
K = 10
NEIGHBOURS = 10  # a synthetic vector lies between a real vector and one of its NEIGHBOURS nearest
MAX_NN_COS = 0.995  # local noise radius floor (duplicate texts have a nearest-neighbour cosine of 1)
GENERATOR = 2  # bump when the synthesis changes (part of the cache key)
# variant -> (Shard index_type whose parameter rules apply, factory string or None = shards.py's own)
VARIANTS = {
    "flat": ("flat", None),
    "hnsw": ("hnsw", None),
    "ivf": ("ivf", None),
    "ivf-sq8": ("ivf", "IVF{nlist},SQ8"),
    "hnsw-sq8": ("hnsw", "IDMap2,HNSW{M},SQ8"),
}
# settings searched per variant; the first is the service's default
SWEEPS = {
    "flat": [{"omp": 1}, {"omp": 2}],
    "hnsw": [{"ef": 128}, {"ef": 256}, {"ef": 512}, {"ef": 1024}],
    "ivf": [{"probe": 1 / 8}, {"probe": 1 / 8, "floor": 32}, {"probe": 1 / 16}, {"probe": 1 / 32}],
    "ivf-sq8": [{"probe": 1 / 8}, {"probe": 1 / 8, "floor": 32}, {"probe": 1 / 16}, {"probe": 1 / 32}],
    "hnsw-sq8": [{"ef": 128}, {"ef": 256}, {"ef": 512}, {"ef": 1024}],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_now_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_peak_mb() -> float:
    """Peak RSS of this process. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over an exec, so a
    worker would report its parent's peak (getrusage is the fallback off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def read_rows(vectors: np.memmap, rows: np.ndarray) -> np.ndarray:
    """A copy of ``vectors[rows]``, then the mapping's pages are dropped so they do not count in the RSS."""
    out = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    vectors._mmap.madvise(mmap.MADV_DONTNEED)
    return out


# --- data: real vectors, queries, synthetic set, ground truth ---------------------------------------------


def real_data(args, encoder) -> tuple[np.ndarray, list[str], list[tuple]]:
    """(real passage vectors, their languages, XQuAD-R questions) as bench_search.py builds and caches them."""
    import bench_search

    pool, questions, composition = bench_search.passage_pool(Path(args.data), REAL_SIZE)
    vectors, encoded = bench_search.cached_embeddings(encoder, [text for _, text, _ in pool], Path(args.embeddings))
    keep = {row[0] for row in bench_search.indexable(pool)}  # what the collection would accept
    mask = np.array([row[0] in keep for row in pool])
    log(f"real passages: {composition}, {encoded} encoded now, {int((~mask).sum())} not indexable (dropped)")
    return vectors[mask], [row[2] for row, ok in zip(pool, mask) if ok], questions


def nn_similarity(points: np.ndarray, data: np.ndarray, self_rows: np.ndarray | None, chunk: int = 100_000) -> np.ndarray:
    """Cosine of each point's nearest neighbour in ``data`` (excluding row ``self_rows[i]`` for point i)."""
    best = np.full(len(points), -np.inf, dtype=np.float32)
    for start in range(0, len(data), chunk):
        sims = data[start : start + chunk] @ points.T  # (chunk, points)
        if self_rows is not None:
            inside = (self_rows >= start) & (self_rows < start + chunk)
            sims[self_rows[inside] - start, np.nonzero(inside)[0]] = -np.inf
        np.maximum(best, sims.max(axis=0), out=best)
    return best


def top_k(queries: np.ndarray, data: np.ndarray, k: int = K, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top k (scores, rows), best first, in batch."""
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(data), chunk):
        sims = queries @ data[start : start + chunk].T
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        scores = np.concatenate([scores, np.take_along_axis(sims, part, axis=1)], axis=1)
        rows = np.concatenate([rows, part + start], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows = np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
    return scores, rows


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.max(np.abs(cdf(a) - cdf(b))))


def language_neighbours(real: np.ndarray, languages: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Each real vector's ``k`` nearest other real vectors of its own language (rows) and the cosine of the
    nearest (exact, FAISS flat in batch)."""
    import faiss

    rows_out = np.zeros((len(real), k), dtype=np.int64)
    nearest = np.zeros(len(real), dtype=np.float32)
    for code in np.unique(languages):
        members = np.nonzero(languages == code)[0]
        index = faiss.IndexFlatIP(real.shape[1])
        index.add(real[members])
        scores, found = index.search(real[members], k + 1)
        for i in range(len(members)):  # drop the point itself (a duplicate may come first)
            keep = found[i] != i
            rows_out[members[i]] = members[found[i][keep][:k]]
            nearest[members[i]] = scores[i][keep][0]
    return rows_out, nearest


class Synthesizer:
    """normalise(p + t (q - p) + s d_p n): p a real vector, q one of p's 10 nearest real neighbours of the same
    language, t ~ U(0, 1/2), n Gaussian noise shaped like p's language's covariance (unit expected norm),
    d_p p's distance to its nearest real neighbour (so noise is small in dense regions, larger in sparse
    ones), s the one fitted scale."""

    def __init__(self, real: np.ndarray, languages: np.ndarray, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.real, self.size = real, size
        neighbours, nearest = language_neighbours(real, languages)
        order = rng.permutation(len(real))
        self.parents = order[np.arange(size) % len(real)]  # every real vector size/len(real) times
        self.partners = neighbours[self.parents, rng.integers(0, neighbours.shape[1], size)]
        self.t = rng.uniform(0, 0.5, size).astype(np.float32)[:, None]
        self.languages = languages[self.parents]
        radius = np.sqrt(2 - 2 * np.minimum(nearest, MAX_NN_COS))  # duplicates' children still differ
        self.noise = np.empty((size, real.shape[1]), dtype=np.float32)  # d_p n, drawn once for every s
        for code in np.unique(languages):
            members = real[languages == code].astype(np.float64)
            covariance = np.cov(members, rowvar=False)
            values, basis = np.linalg.eigh(covariance / np.trace(covariance))
            root = ((basis * np.sqrt(np.clip(values, 0, None))) @ basis.T).astype(np.float32)  # symmetric square root
            rows = np.nonzero(self.languages == code)[0]
            for start in range(0, len(rows), 200_000):
                part = rows[start : start + 200_000]
                z = rng.standard_normal((len(part), real.shape[1]), dtype=np.float32)
                self.noise[part] = (z @ root) * radius[self.parents[part], None]

    def make(self, scale: float, out: np.ndarray | None = None, chunk: int = 200_000) -> np.ndarray:
        out = np.empty_like(self.noise) if out is None else out
        for start in range(0, self.size, chunk):
            window = slice(start, start + chunk)
            parent = self.real[self.parents[window]]
            block = parent + self.t[window] * (self.real[self.partners[window]] - parent) + scale * self.noise[window]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[window] = block
        return out


def encoder_fingerprint(args) -> str:
    from encoder.artifact import load_artifact_info
    from encoder.runtime import RUNTIME_VERSION

    return f"{load_artifact_info(Path(args.model)).fingerprint(args.precision)}-r{RUNTIME_VERSION}"


def prepare(args, work: Path) -> dict:
    """Real vectors -> queries, synthetic set (noise scale fitted), ground truth; cached under ``work``."""
    meta_path = work / "meta.json"
    if meta_path.is_file() and not args.force_data:
        meta = json.loads(meta_path.read_text())
        if all((work / name).is_file() for name in ("synthetic.npy", "languages.npy", "queries.npy", "gt.npy")):
            log(f"data cached: {work} (vectors of encoder {meta['encoder']})")
            current = encoder_fingerprint(args)
            if current != meta["encoder"]:
                log(f"note: the model is now {current}; these cached vectors and queries are {meta['encoder']}'s "
                    "(consistent with each other). --force-data makes them again from the current model.")
            return meta
    import faiss

    from encoder import OnnxEncoder

    faiss.omp_set_num_threads(args.threads)
    work.mkdir(parents=True, exist_ok=True)
    encoder = OnnxEncoder(args.model, precision=args.precision, threads=args.threads)
    real, real_languages, questions = real_data(args, encoder)
    names = sorted(set(real_languages))
    real_codes = np.array([names.index(code) for code in real_languages], dtype=np.uint8)
    queries_rows = questions[: args.queries]
    log(f"encoding {len(queries_rows)} XQuAD-R questions one at a time")
    queries = np.concatenate([encoder.encode([text], "query") for _, text, _ in queries_rows]).astype(np.float32)

    rng = np.random.default_rng(args.seed + 1)
    real_sample = rng.choice(len(real), NN_SAMPLE, replace=False)
    real_nn = nn_similarity(real[real_sample], real, real_sample)
    trend = {}
    for n in (12_500, 25_000, 50_000):  # how the real nearest-neighbour cosine grows with size
        subset = rng.choice(len(real), n, replace=False)
        picked = rng.choice(n, NN_SAMPLE, replace=False)
        trend[n] = float(np.median(nn_similarity(real[subset[picked]], real[subset], picked)))
    trend[len(real)] = float(np.median(real_nn))
    log(f"real nearest-neighbour cosine, median by subset size: {trend}")

    log(f"synthesising {args.size:,} vectors from {len(real):,} real ones")
    synth = Synthesizer(real, real_codes, args.size, args.seed)
    synth_sample = np.random.default_rng(args.seed + 2).choice(args.size, NN_SAMPLE, replace=False)
    target = float(np.median(real_nn)) if args.nn_target is None else args.nn_target
    out = np.empty_like(synth.noise)
    low, high, fits = 0.0, 2.0, []  # bisection on the noise scale: median NN cosine decreases with it
    for step in range(args.fit_steps):
        sigma = (low + high) / 2
        synth.make(sigma, out)
        median = float(np.median(nn_similarity(out[synth_sample], out, synth_sample)))
        fits.append((sigma, median))
        log(f"  fit {step + 1}/{args.fit_steps}: noise scale {sigma:.4f} -> median NN cosine {median:.4f} (target {target:.4f})")
        if abs(median - target) < 0.001:
            break
        low, high = (sigma, high) if median > target else (low, sigma)
    sigma = min(fits, key=lambda fit: abs(fit[1] - target))[0]
    synth.make(sigma, out)
    synth_nn = nn_similarity(out[synth_sample], out, synth_sample)
    parent_cos = np.einsum("ij,ij->i", out[synth_sample], real[synth.parents[synth_sample]])
    real_top, _ = top_k(queries, real)
    log("ground truth: exact top 10 of every query")
    synth_top, gt = top_k(queries, out)
    np.save(work / "synthetic.npy", out)
    np.save(work / "languages.npy", synth.languages)
    np.save(work / "queries.npy", queries)
    np.save(work / "gt.npy", gt)
    del synth, out
    quantiles = [1, 10, 25, 50, 75, 90, 99]
    pct = lambda values: [round(float(np.percentile(values, q)), 4) for q in quantiles]  # noqa: E731
    meta = {
        "size": args.size, "seed": args.seed, "sigma": sigma, "nn_target": target, "fits": fits, "languages": names,
        "real": {"n": len(real), "languages": {code: real_languages.count(code) for code in names}},
        "shards": {names[code]: int(n) for code, n in zip(*np.unique(np.load(work / "languages.npy"), return_counts=True))},
        "queries": {"n": len(queries_rows), "languages": len({row[2] for row in queries_rows})},
        "encoder": encoder.fingerprint,
        "check": {
            "quantiles": quantiles, "real_nn": pct(real_nn), "synthetic_nn": pct(synth_nn),
            "ks": ks_distance(real_nn, synth_nn), "real_nn_median_by_size": trend,
            "child_parent_cos": pct(parent_cos),
            "query_top1": {"real": pct(real_top[:, 0]), "synthetic": pct(synth_top[:, 0])},
            "query_top10": {"real": pct(real_top[:, K - 1]), "synthetic": pct(synth_top[:, K - 1])},
        },
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def insertion_order_check(args) -> None:
    """HNSW recall on real vectors, inserted in bench_search.py's order vs a random order: the en and fi shards
    of the real 100k, added in chunks as a 5,000-row Collection.add would, searched with the real queries."""
    import faiss

    from encoder import OnnxEncoder
    from indexes import shards
    from indexes.shards import Shard, single_threaded

    faiss.omp_set_num_threads(args.threads)
    encoder = OnnxEncoder(args.model, precision=args.precision, threads=args.threads)
    real, languages, questions = real_data(args, encoder)
    queries = np.concatenate([encoder.encode([text], "query") for _, text, _ in questions[: args.queries]])
    languages = np.array(languages)
    print(f"\nHNSW (M {shards.HNSW_M}, efConstruction {shards.HNSW_EF_CONSTRUCTION}, efSearch {shards.HNSW_EF_SEARCH}) on real vectors, {len(queries)} queries:\n")
    print("| shard | passages | insertion order | build s | recall@10 |\n|---|---:|---|---:|---:|")
    for code in ("en", "fi"):
        rows = np.nonzero(languages == code)[0]
        vectors = real[rows]
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
        chunk_of = rows // 5000  # which 5,000-row Collection.add of the pool each vector came in
        orders = {"pool order (bench_search.py)": np.arange(len(rows)),
                  "random": np.random.default_rng(args.seed).permutation(len(rows))}
        for name, order in orders.items():
            shard = Shard.empty("hnsw", real.shape[1])
            start = time.perf_counter()
            batches = [order[chunk_of[order] == c] for c in np.unique(chunk_of)] if name.startswith("pool") \
                else np.array_split(order, max(1, len(order) // 5000))
            for batch in batches:
                shard.add(batch.astype(np.int64), vectors[batch])
            seconds = time.perf_counter() - start
            with single_threaded():
                found = [shard.search(np.ascontiguousarray(q[None]), K)[1] for q in queries]
            recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / K for f, e in zip(found, exact)])
            print(f"| {code} | {len(rows):,} | {name} | {seconds:.1f} | {recall:.3f} |")


# --- workers (subprocesses) -------------------------------------------------------------------------------


def groups(layout: str, languages: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    if layout == "single":
        return {"all": np.arange(len(languages))}
    return {names[code]: np.nonzero(languages == code)[0] for code in np.unique(languages)}


def new_index(variant: str, dim: int, n: int):
    import faiss

    from indexes import shards

    index_type, factory = VARIANTS[variant]
    if factory is None:
        return shards.Shard._new_index(index_type, dim, n)  # exactly what the service builds
    if index_type == "ivf" and n < shards.IVF_MIN_SIZE:
        return shards.Shard._new_index("flat", dim, n)  # like ivf: small shards stay exact
    index = faiss.index_factory(dim, factory.format(nlist=shards._ivf_lists(n), M=shards.HNSW_M), faiss.METRIC_INNER_PRODUCT)
    if index_type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = shards.HNSW_EF_CONSTRUCTION
    return index


def worker_build(args) -> dict:
    import faiss

    from indexes.shards import Shard

    faiss.omp_set_num_threads(args.threads)
    work, out_dir = Path(args.work), Path(args.index_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads((work / "meta.json").read_text())
    vectors = np.load(work / "synthetic.npy", mmap_mode="r")
    dim = vectors.shape[1]
    parts = groups(args.layout, np.load(work / "languages.npy"), meta["languages"])
    rss_start = rss_now_mb()
    rng = np.random.default_rng(0)
    seconds, structures, kinds = 0.0, {}, {}
    for name, rows in parts.items():
        start = time.perf_counter()
        index = new_index(args.variant, dim, len(rows))
        if not index.is_trained:
            inner = faiss.downcast_index(index.index if isinstance(index, faiss.IndexIDMap2) else index)
            n_train = min(len(rows), TRAIN_PER_LIST * getattr(inner, "nlist", 1000))
            index.train(read_rows(vectors, np.sort(rng.choice(rows, n_train, replace=False))))
        shard = Shard(VARIANTS[args.variant][0], dim, index)
        for offset in range(0, len(rows), ADD_CHUNK):
            part = rows[offset : offset + ADD_CHUNK]
            shard.add(part.astype(np.int64), read_rows(vectors, part))
        seconds += time.perf_counter() - start
        structures[name] = shard.structure
        inner = shard._inner_index
        kinds[name] = type(inner).__name__ + (f" nlist={inner.nlist}" if isinstance(inner, faiss.IndexIVF) else "")
        faiss.write_index(shard.index, str(out_dir / f"{name}.faiss"))
        log(f"  built {args.variant}/{args.layout} shard {name}: {len(rows):,} vectors, {seconds:.1f} s so far")
    size = sum(path.stat().st_size for path in out_dir.glob("*.faiss"))
    return {"build_s": seconds, "index_bytes": size, "build_rss_peak_mb": rss_peak_mb(), "rss_before_mb": rss_start,
            "structures": structures, "kinds": kinds}


def apply_setting(shard, setting: dict) -> int:
    import faiss

    inner = shard._inner_index
    if "ef" in setting and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = setting["ef"]
    if "probe" in setting and isinstance(inner, faiss.IndexIVF):
        floor = setting.get("floor", 8)  # shards.py's rule: IVF_MIN_NPROBE = 8
        inner.nprobe = min(inner.nlist, max(floor, round(inner.nlist * setting["probe"])))
        return inner.nprobe
    return 0


def worker_search(args) -> dict:
    import faiss

    from indexes.shards import Shard, single_threaded

    faiss.omp_set_num_threads(args.threads)
    work, index_dir = Path(args.work), Path(args.index_dir)
    queries = np.load(work / "queries.npy")
    gt = np.load(work / "gt.npy")
    rss_start = rss_now_mb()
    index_type = VARIANTS[args.variant][0]
    shards = {path.stem: Shard.load(path, index_type, queries.shape[1]) for path in sorted(index_dir.glob("*.faiss"))}
    rss_loaded = rss_now_mb()
    results = []
    for setting in SWEEPS[args.variant]:
        nprobes = sorted({apply_setting(shard, setting) for shard in shards.values()} - {0})
        threads = setting.get("omp", 1)

        def search(vector: np.ndarray) -> np.ndarray:
            scores, keys = [], []
            for shard in shards.values():
                found_scores, found_keys = shard.search(vector, K)
                scores.append(found_scores)
                keys.append(found_keys)
            scores, keys = np.concatenate(scores), np.concatenate(keys)
            return keys[np.lexsort((keys, -scores))[:K]]  # the collection's merge

        def timed(vector: np.ndarray) -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            if threads == 1:
                with single_threaded():  # what Collection.search does
                    found = search(vector)
            else:
                faiss.omp_set_num_threads(threads)
                found = search(vector)
            return (time.perf_counter() - start) * 1000, found

        for vector in queries[:10]:
            timed(vector[None])  # warm-up
        ms, recalls = [], []
        deadline = time.monotonic() + args.search_budget
        for row, vector in enumerate(queries):
            elapsed, found = timed(np.ascontiguousarray(vector[None]))
            ms.append(elapsed)
            recalls.append(len(set(found.tolist()) & set(gt[row, :K].tolist())) / K)
            if time.monotonic() > deadline and len(ms) >= 100:
                break
        results.append({"setting": setting, "nprobe": nprobes, "queries": len(ms), "p50_ms": statistics.median(ms),
                        "p99_ms": float(np.percentile(ms, 99)), "recall": float(np.mean(recalls))})
        log(f"  {args.variant}/{args.layout} {setting} nprobe={nprobes}: p50 {results[-1]['p50_ms']:.2f} ms, "
            f"p99 {results[-1]['p99_ms']:.2f} ms, recall@10 {results[-1]['recall']:.3f} ({len(ms)} queries)")
    return {"settings": results, "serve_rss_peak_mb": rss_peak_mb(), "rss_before_load_mb": rss_start,
            "rss_loaded_mb": rss_loaded}


# --- orchestration ----------------------------------------------------------------------------------------


def run_worker(args, work: Path, mode: str, variant: str, layout: str, index_dir: Path) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--variant", variant, "--layout", layout,
               "--work", str(work), "--index-dir", str(index_dir), "--threads", str(args.threads),
               "--search-budget", str(args.search_budget)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    try:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, timeout=args.step_timeout, check=True, text=True)
    except subprocess.TimeoutExpired:
        return {"error": f"{mode} timed out after {args.step_timeout} s"}
    except subprocess.CalledProcessError as error:
        return {"error": f"{mode} failed (exit status {error.returncode})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def data_key(args) -> str:
    text = json.dumps([args.size, args.seed, args.queries, args.model, args.precision, args.fit_steps, REAL_SIZE, NN_SAMPLE,
                       args.nn_target, GENERATOR])
    return f"{args.size}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def setting_text(setting: dict) -> str:
    names = {"omp": "OpenMP threads", "ef": "efSearch", "probe": "nprobe share", "floor": "at least"}
    return ", ".join(f"{names[key]} " + (f"1/{round(1 / value)}" if key == "probe" else str(value))
                     for key, value in setting.items())


def built_as(build: dict) -> str:
    """The FAISS classes the shards are, with their nlist range: "IndexIVFFlat nlist 169–597"."""
    lists: dict[str, list[int]] = {}
    for kind in build["kinds"].values():
        name, _, nlist = kind.partition(" nlist=")
        lists.setdefault(name, []).extend([int(nlist)] if nlist else [])
    return " + ".join(name + (f" nlist {min(n)}" + (f"–{max(n)}" if max(n) > min(n) else "") if n else "")
                      for name, n in sorted(lists.items()))


def gb(mb: float) -> str:
    return f"{mb / 1024:.2f}"


def report(args, meta: dict, results: dict) -> None:
    check = meta["check"]
    size = meta["size"]
    print(f"\n{size:,} passages resampled from {meta['real']['n']:,} real {meta['encoder']} passage vectors "
          f"({len(meta['languages'])} languages), noise scale s = {meta['sigma']:.4f}; {meta['queries']['n']} real XQuAD-R "
          f"questions ({meta['queries']['languages']} languages), k={K}; {args.threads} FAISS threads for builds, "
          f"searches single-threaded per query as /search does; {os.cpu_count()} cores, load average "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} now (cached rows keep the numbers of their run)\n")
    print("Nearest-neighbour cosine (each point's closest other point in its own set), percentiles "
          + "/".join(f"p{q}" for q in check["quantiles"]) + ":")
    print(f"- real {meta['real']['n']:,}: {check['real_nn']}")
    print(f"- synthetic {size:,}: {check['synthetic_nn']} (Kolmogorov-Smirnov distance {check['ks']:.3f})")
    print(f"- real median by subset size: {check['real_nn_median_by_size']}")
    print(f"- synthetic vector vs its parent: {check['child_parent_cos']}")
    print(f"- query top-1 cosine: real {check['query_top1']['real']}, synthetic {check['query_top1']['synthetic']}")
    print(f"- query top-10 cosine: real {check['query_top10']['real']}, synthetic {check['query_top10']['synthetic']}")
    print(f"- per-language shard sizes: {meta['shards']}\n")
    if not results:
        return
    print("| index | layout | setting | build s | index bytes/passage | build RSS peak GB | serving RSS peak GB "
          "| search p50 ms | search p99 ms | recall@10 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (variant, layout), result in results.items():
        if "error" in result:
            print(f"| {variant} | {layout} | {result['error']} | | | | | | | |")
            continue
        build, search = result["build"], result["search"]
        for number, row in enumerate(search["settings"]):
            text = setting_text(row["setting"])
            if row["nprobe"]:
                low, high = min(row["nprobe"]), max(row["nprobe"])
                text += f" (nprobe {low})" if low == high else f" (nprobe {low}–{high})"
            text += " **default**" if number == 0 else ""
            head = (f"| {variant} | {layout} | {text} | {build['build_s']:.1f} | {build['index_bytes'] / size:,.0f} "
                    f"| {gb(build['build_rss_peak_mb'])} | {gb(search['serve_rss_peak_mb'])} ") if number == 0 else \
                   f"| | | {text} | | | | "
            print(head + f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['recall']:.3f} |")
    if results:
        print("\nbuilt as: " + "; ".join(f"{v}/{l}: {built_as(r['build'])}" for (v, l), r in results.items() if "build" in r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--per-language", nargs="*", default=["flat", "hnsw", "ivf", "ivf-sq8"], choices=list(VARIANTS),
                        help="variants also measured in the per-language shard layout (every variant gets the single index)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS/BLAS threads for builds (the service's 2 cores)")
    parser.add_argument("--model", default=str(ROOT / "artifacts/models/e5-small-base"))
    parser.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--embeddings", default=str(ROOT / "var" / "bench"), help="bench_search.py's embedding cache")
    parser.add_argument("--work", default=str(ROOT / "var" / "bench" / "scale"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nn-target", type=float, default=None,
                        help="median nearest-neighbour cosine to fit the noise scale to (default: the real 100k set's)")
    parser.add_argument("--fit-steps", type=int, default=12, help="bisection steps for the noise scale")
    parser.add_argument("--insertion-order-check", action="store_true",
                        help="only: HNSW recall on the real en/fi vectors, bench_search.py's insertion order vs random")
    parser.add_argument("--prepare-only", action="store_true", help="make the vectors and ground truth, print the check, stop")
    parser.add_argument("--step-timeout", type=int, default=2400, help="seconds per build/search subprocess")
    parser.add_argument("--search-budget", type=float, default=180, help="seconds per search setting (>= 100 queries)")
    parser.add_argument("--force", action="store_true", help="rebuild and re-search even if results are cached")
    parser.add_argument("--force-data", action="store_true", help="resynthesise the vectors and ground truth")
    parser.add_argument("--keep-indexes", action="store_true")
    parser.add_argument("--worker", choices=("build", "search"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_build(args) if args.worker == "build" else worker_search(args)
        print(json.dumps(result))
        return

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.insertion_order_check:
        insertion_order_check(args)
        return
    started = time.monotonic()
    work = Path(args.work) / data_key(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a running worker is killed with us
    meta = prepare(args, work)
    if args.prepare_only:
        report(args, meta, {})
        return
    results = {}
    for variant in args.variants:
        for layout in ["single"] + (["per-language"] if variant in args.per_language else []):
            cached = work / "results" / f"{variant}-{layout}.json"
            if cached.is_file() and not args.force:
                results[(variant, layout)] = json.loads(cached.read_text())
                log(f"{variant}/{layout}: cached result")
                continue
            index_dir = work / "indexes" / f"{variant}-{layout}"
            shutil.rmtree(index_dir, ignore_errors=True)
            log(f"{variant}/{layout}: building")
            build = run_worker(args, work, "build", variant, layout, index_dir)
            result = build if "error" in build else {"build": build}
            if "error" not in build:
                log(f"{variant}/{layout}: built in {build['build_s']:.0f} s; searching")
                search = run_worker(args, work, "search", variant, layout, index_dir)
                result = search if "error" in search else {"build": build, "search": search}
            if not args.keep_indexes:
                shutil.rmtree(index_dir, ignore_errors=True)
            results[(variant, layout)] = result
            if "error" not in result:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(result))
            log(f"{variant}/{layout}: {result.get('error', 'done')} ({(time.monotonic() - started) / 60:.1f} min in all)")
    report(args, meta, results)


if __name__ == "__main__":
    main()
