"""Encoder benchmark, one run, side by side: the service's ONNX Runtime encoder and its peers, same model.

    .venv/bin/python bench/bench_encoder.py [--passages 512] [--threads 2] [--batch-size 32] [--repeats 3]
        [--engines NAME ...] [--map] [--map-only]
    bench/peers/setup.sh        # once: the peer engines' venvs (var/peers/); a missing one is listed, not run

Rows (``--engines``; default all, in this order):

    torch             the project's torch model (trainer.modeling.SentenceEncoder), fp32, batched
    st-torch          sentence-transformers 6.x, torch backend (the project's .venv), fp32, batched
    st-onnx           sentence-transformers 5.x, ONNX backend (var/peers/st5-onnx), fp32, batched
    fastembed         fastembed (var/peers/fastembed) running the artifact's model.onnx, fp32, batched
    ort-fp32          encoder.OnnxEncoder, the artifact's model.onnx, batched
    ort-int8-dynamic  encoder.OnnxEncoder, quantize_dynamic(model.onnx, QInt8, per_channel) made here,
                      one text per call (its activation scales come from the whole input)
    ort-int8-static   encoder.OnnxEncoder(precision="int8"): the artifact's model.int8.onnx, batched as
                      OnnxEncoder batches it

The same model everywhere: the sentence-transformers folder is made from the weights the artifact was
exported from (bench/peers/prepare.py: base + the artifact's adapter, checked by sha256, via
trainer.st_export), sentence-transformers 5 exports it to ONNX itself (optimum: token embeddings out,
pooled by its Pooling/Normalize modules), fastembed runs the artifact's own model.onnx (which pools and
normalises in the graph: pooling DISABLED, output ``sentence_embedding``, no second normalisation). Every
row's vectors are compared with the ORT fp32 row's (cosine mean / min) to show it.

The same strings everywhere: passages are XQuAD-R sentences (../shared/data/xquad-r, 11 languages) with the
contract's passage prefix; peer engines get ``"passage: " + text`` and no prompt name, the project's
engines the text and the kind (they prefix from the same contract); truncation at the contract's
max_length (512 tokens with <s> and </s>) in all of them. Tokens are counted once, with the artifact's
tokenizer, prefix and special tokens included: the same count for every engine.

Each engine runs in its own process (bench/peers/encode_worker.py, under its venv's python) with the same
thread count: OMP/MKL/OpenBLAS/RAYON_NUM_THREADS = --threads in its environment, torch.set_num_threads,
ONNX Runtime intra_op_num_threads (inter_op 1) and fastembed's ``threads`` set explicitly. Each is warmed up
(two batches) and then timed over all passages --repeats times; the median is reported.

Share of GEMM peak. FLOPs of one passage of L tokens (hidden d, FFN f, n layers; read from the model's
config.json, e5-small: d 384, f 1536, n 12):

    FLOPs(L) = n * ( 2*L*(4*d*d + 2*d*f)      Q, K, V, output projections and the two FFN matrices
                     + 4*L*L*d )              Q.K^T and attention.V, all heads together

(embeddings, layer norms, softmax, GELU and pooling are left out: a few percent). L is the passage's own
token count, so padding a batch to its longest text is work the engine does but does not get credit for.
Achieved = sum of FLOPs(L) over the passages / median seconds. The peak is measured in the same run, with
the same threads, on GEMMs of this model's shapes [M,384]x[384,1536], [M,1536]x[1536,384] and
[M,384]x[384,384] with M = batch size x mean tokens per passage, the best shape counting: for fp32 rows the
fp32 peak, numpy's matmul (its BLAS; GFLOP/s) or ONNX Runtime's fp32 MatMul (MLAS), whichever is higher
(both are printed: ORT's MLAS can beat numpy's OpenBLAS, and a share over 100% would mean nothing); for
int8 rows ONNX Runtime MatMulInteger (uint8 x int8 and int8 x int8 activations x weights, constant weights,
GOP/s). An int8 row's attention products stay fp32, so its share slightly flatters it.

mAP (--map; --map-only for that alone): multilingual / mono / cross mAP on the XQuAD-R test half for each
precision, by the project's evaluation (``python -m evaluation lareqa --split test``): fp32 (model.onnx),
dynamic int8 one text per call (--batch-size 1) and the artifact's int8 (model.int8.onnx). A committed report
under reports/ is reused where a row measured exactly this model file (the same fingerprint), the same
data, split, languages and no calibration; otherwise it is evaluated (minutes per model, embeddings cached
under var/cache/embeddings). Files and outputs: var/bench/encoder/<fp32 sha256[:16]>/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "var" / "peers"
WORKER = ROOT / "bench" / "peers" / "encode_worker.py"
PREPARE = ROOT / "bench" / "peers" / "prepare.py"
ENGINES = ("torch", "st-torch", "st-onnx", "fastembed", "ort-fp32", "ort-int8-dynamic", "ort-int8-static")
NOT_INSTALLED = "not installed (run bench/peers/setup.sh)"


def load_texts(data_dir: Path, n_passages: int, n_queries: int) -> tuple[list[str], list[str]]:
    passages, queries = [], []
    languages = sorted(p.stem for p in data_dir.glob("*.json") if p.stem != "split")
    for language in languages:
        articles = json.loads((data_dir / f"{language}.json").read_text(encoding="utf-8"))["data"]
        paragraphs = [p for article in articles for p in article["paragraphs"]]
        passages += [s for p in paragraphs[:12] for s in p["sentences"]][: n_passages // len(languages) + 1]
        queries += [qa["question"] for p in paragraphs[:6] for qa in p["qas"]][: n_queries // len(languages) + 1]
    return passages[:n_passages], queries[:n_queries]


# ---------------------------------------------------------------------------------------------- peaks

def _best_seconds(fn, budget: float) -> float:
    for _ in range(3):
        fn()
    best, spent = float("inf"), 0.0
    while spent < budget or best == float("inf"):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return best


def gemm_shapes(m: int, d: int, f: int) -> list[tuple[int, int, int]]:
    return [(m, d, f), (m, f, d), (m, d, d)]


def numpy_fp32_peak(shapes, budget: float) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        seconds = _best_seconds(lambda: np.matmul(a, b, out=out), budget)
        rows.append({"shape": (m, k, n), "gflops": 2 * m * k * n / seconds / 1e9})
    return rows


def _ort_matmul_session(k: int, n: int, a_type: str, threads: int):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if a_type == "fp32":
        weights = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_elem, y_elem, inits = TensorProto.FLOAT, TensorProto.FLOAT, [weights]
    else:
        weights = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
        a_elem = TensorProto.UINT8 if a_type == "u8" else TensorProto.INT8
        zero = numpy_helper.from_array(np.array(128 if a_type == "u8" else 0,
                                                dtype=np.uint8 if a_type == "u8" else np.int8), "a_zero")
        b_zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "b_zero")
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])
        y_elem, inits = TensorProto.INT32, [weights, zero, b_zero]
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_elem, ["M", k])],
                              [helper.make_tensor_value_info("Y", y_elem, ["M", n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_peak(shapes, a_type: str, threads: int, budget: float) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(1)
    rows = []
    for m, k, n in shapes:
        session = _ort_matmul_session(k, n, a_type, threads)
        if a_type == "fp32":
            a = rng.standard_normal((m, k)).astype(np.float32)
        elif a_type == "u8":
            a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        else:
            a = rng.integers(-127, 128, (m, k), dtype=np.int8)
        seconds = _best_seconds(lambda: session.run(None, {"A": a}), budget)
        rows.append({"shape": (m, k, n), "gflops": 2 * m * k * n / seconds / 1e9})
    return rows


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS threads: OPENBLAS/OMP_NUM_THREADS"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(f"{p.get('internal_api')} {p.get('version')}, {p.get('num_threads')} threads" for p in pools) or "?"


def _fmt_peak(rows: list[dict], unit: str) -> str:
    return ", ".join(f"{r['gflops']:.0f} at [{r['shape'][0]},{r['shape'][1]}]x[{r['shape'][1]},{r['shape'][2]}]"
                     for r in rows) + f" {unit}"


# ------------------------------------------------------------------------------------------ the model

def flops_per_text(lengths, d: int, f: int, layers: int):
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.float64)
    return layers * (2 * lengths * (4 * d * d + 2 * d * f) + 4 * lengths * lengths * d)


def int8_kind(path: Path) -> str:
    """'dynamic' (DynamicQuantizeLinear in the graph), 'static' (QuantizeLinear/QDQ or QLinear ops) or '?'."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    if "DynamicQuantizeLinear" in ops or "DynamicQuantizeMatMul" in ops:
        return "dynamic"
    if ops & {"QuantizeLinear", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm"}:
        return "static"
    return "?"


def _symlink(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target)


def fastembed_folder(artifact: Path, st_dir: Path, out: Path, info) -> Path:
    """model.onnx: the artifact's own fp32 file; tokenizer.json: the artifact's; the tokenizer config files
    (model_max_length, special tokens) from the sentence-transformers folder. Links, not copies."""
    out.mkdir(parents=True, exist_ok=True)
    _symlink((artifact / info.files["fp32"]["path"]).resolve(), out / "model.onnx")
    _symlink((artifact / info.tokenizer).resolve(), out / "tokenizer.json")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "config.json"):
        _symlink((st_dir / name).resolve(), out / name)
    return out


# -------------------------------------------------------------------------------------------- running

def worker_env(threads: int, hf_home: Path) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
                 "RAYON_RS_NUM_CPUS", "NUMEXPR_NUM_THREADS"):
        env[name] = str(threads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(hf_home), TOKENIZERS_PARALLELISM="true",
               PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    return env


def run_logged(command: list[str], env: dict, log: Path, timeout: float) -> tuple[bool, str]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        try:
            done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s (log: {log.relative_to(ROOT)})"
    if done.returncode == 0:
        return True, ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit {done.returncode}"
    return False, f"failed: {last[:200]} (log: {log.relative_to(ROOT)})"


def _label(template: str, versions: dict | None) -> str:
    """'torch {torch} (…)' with the worker's library versions, or without them for a row that did not run."""
    import re

    if versions is None:
        return re.sub(r"\s*\{[a-z_]+\}", "", template).replace("(, ", "(").replace(" ()", "")
    known = {name.replace("-", "_"): value for name, value in versions.items()}
    return re.sub(r"\{([a-z_]+)\}", lambda match: known.get(match.group(1), "?"), template)


def _has_module(python: str, module: str) -> bool:
    if python == sys.executable:
        import importlib.util

        return importlib.util.find_spec(module) is not None
    probe = subprocess.run([python, "-c", f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"],
                           capture_output=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts/models/e5-small-recommended"),
                        help="the artifact (default: the served model, %(default)s)")
    parser.add_argument("--st-model", default=None,
                        help="a sentence-transformers folder of the same model (default: made by bench/peers/prepare.py)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/xquad-r"))
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per engine; the median is reported")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), metavar="NAME",
                        help=f"rows to run (default: all): {' '.join(ENGINES)}")
    parser.add_argument("--peak-seconds", type=float, default=1.0, help="time budget per GEMM shape (default: 1)")
    parser.add_argument("--map", action="store_true", help="also mAP on the XQuAD-R test half per precision")
    parser.add_argument("--map-only", action="store_true", help="the mAP table alone")
    parser.add_argument("--map-languages", nargs="+", default=None, metavar="LANG",
                        help="evaluate these languages only (a quick check; nothing is reused then)")
    parser.add_argument("--worker-timeout", type=float, default=3600)
    args = parser.parse_args()
    threads = args.threads
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = str(threads)  # before numpy (OpenBLAS) and tokenizers (rayon) start their pools

    import numpy as np
    from tokenizers import Tokenizer

    sys.path.insert(0, str(ROOT))
    from encoder.artifact import load_artifact_info

    artifact = Path(args.model).resolve()
    info = load_artifact_info(artifact)
    contract = info.contract
    work = ROOT / "var" / "bench" / "encoder" / info.files["fp32"]["sha256"][:16]
    work.mkdir(parents=True, exist_ok=True)
    env = worker_env(threads, work / "hf-home")
    timeout = args.worker_timeout

    # Model files (cached): dynamic int8, the sentence-transformers folder.
    dynamic_dir = work / "dynamic-int8"
    wants_dynamic = "ort-int8-dynamic" in args.engines or args.map or args.map_only
    problems: dict[str, str] = {}
    if wants_dynamic:
        ok, why = run_logged([sys.executable, str(PREPARE), "dynamic-int8", "--artifact", str(artifact),
                              "--out", str(dynamic_dir)], env, work / "logs" / "prepare-dynamic-int8.log", timeout)
        if not ok:
            problems["ort-int8-dynamic"] = why
    if args.map_only:
        run_map(args, artifact, info, dynamic_dir, env, work)
        return

    st_dir = Path(args.st_model).resolve() if args.st_model else work / "st"
    needs_st = {"torch", "st-torch", "st-onnx", "fastembed"} & set(args.engines)
    if needs_st and not args.st_model:
        ok, why = run_logged([sys.executable, str(PREPARE), "st-folder", "--artifact", str(artifact), "--out", str(st_dir)],
                             env, work / "logs" / "prepare-st-folder.log", timeout)
        if not ok:
            for name in needs_st:
                problems[name] = f"no sentence-transformers folder: {why}"
    config_file = st_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    d, f, layers = (config.get("hidden_size", 384), config.get("intermediate_size", 1536),
                    config.get("num_hidden_layers", 12))

    # Texts and their token counts (the artifact's tokenizer, prefix and special tokens included).
    passages, _ = load_texts(Path(args.data), args.passages, 0)
    tokenizer = Tokenizer.from_file(str(artifact / info.tokenizer))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=contract.max_length)
    lengths = np.array([len(e.ids) for e in tokenizer.encode_batch(contract.with_prefix(passages, "passage"))])
    total_tokens = int(lengths.sum())
    total_flops = float(flops_per_text(lengths, d, f, layers).sum())
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps({"kind": "passage", "prefix": contract.passage_prefix, "texts": passages},
                                     ensure_ascii=False), encoding="utf-8")

    # GEMM peaks on this machine, now, with the same threads.
    m = int(args.batch_size * round(float(lengths.mean())))
    shapes = gemm_shapes(m, d, f)
    print(f"measuring GEMM peaks ({threads} threads) ...", file=sys.stderr)
    peaks = {"numpy fp32": numpy_fp32_peak(shapes, args.peak_seconds),
             "ORT MatMul fp32": ort_peak(shapes, "fp32", threads, args.peak_seconds),
             "ORT MatMulInteger u8 x s8": ort_peak(shapes, "u8", threads, args.peak_seconds),
             "ORT MatMulInteger s8 x s8": ort_peak(shapes, "s8", threads, args.peak_seconds)}
    fp32_peak = max(r["gflops"] for key in ("numpy fp32", "ORT MatMul fp32") for r in peaks[key])
    fp32_peak_source = max(("numpy fp32", "ORT MatMul fp32"), key=lambda key: max(r["gflops"] for r in peaks[key]))
    blas = _blas_info()
    int8_peak = max(r["gflops"] for key in ("ORT MatMulInteger u8 x s8", "ORT MatMulInteger s8 x s8")
                    for r in peaks[key])

    static_kind = int8_kind(artifact / info.files["int8"]["path"]) if "int8" in info.files else None
    rows = plan_rows(args, artifact, info, st_dir, work, dynamic_dir, static_kind, problems)
    results = {}
    for row in rows:
        if row.get("skip"):
            continue
        print(f"running {row['name']} ...", file=sys.stderr)
        out = work / "runs" / row["name"]
        if row.get("prepare"):
            ok, why = row["prepare"]()
            if not ok:
                row["skip"] = why
                continue
        command = [row["python"], str(WORKER), *row["args"], "--texts", str(texts_file), "--out", str(out),
                   "--threads", str(threads), "--repeats", str(args.repeats)]
        if "--batch-size" not in row["args"]:
            command += ["--batch-size", str(args.batch_size)]
        ok, why = run_logged(command, env, work / "logs" / f"{row['name']}.log", timeout)
        if not ok:
            row["skip"] = why
            continue
        timings = json.loads((out / "timings.json").read_text())
        vectors = np.load(out / "vectors.npy")
        if vectors.shape != (len(passages), contract.dim):
            row["skip"] = f"failed: vectors of shape {vectors.shape}, expected {(len(passages), contract.dim)}"
            continue
        if timings.get("max_length") != contract.max_length:
            print(f"  warning: {row['name']} truncates at {timings.get('max_length')} tokens, the contract at "
                  f"{contract.max_length}", file=sys.stderr)
        results[row["name"]] = {"timings": timings, "vectors": vectors}

    reference = results.get("ort-fp32", {}).get("vectors")
    unique = len(set(passages))
    print(f"\nmodel `{Path(args.model).name}` (fp32 sha256 {info.files['fp32']['sha256'][:12]}); {len(passages)} passages "
          f"(XQuAD-R sentences, {unique} unique, 11 languages), {total_tokens} tokens (mean {lengths.mean():.1f}, "
          f"max {lengths.max()}), {total_flops / len(passages) / 1e9:.2f} GFLOP per passage (mean); {threads} threads, "
          f"batch {args.batch_size}, median of {args.repeats} timed passes after a warm-up\n")
    print("| engine | precision | batching | passages/s | tokens/s | share of GEMM peak | cosine to fp32 (mean / min) |")
    print("|---|---|---|---:|---:|---:|---|")
    summary = []
    for row in rows:
        if row.get("skip"):
            print(f"| {_label(row['label'], None)} | {row['precision']} | {row['batching']} | {row['skip']} | | | |")
            summary.append({"engine": row["name"], "status": row["skip"]})
            continue
        result = results[row["name"]]
        timings = result["timings"]
        seconds = statistics.median(timings["seconds"])
        label = _label(row["label"], timings["versions"])
        batching = row["batching"]
        if row["name"].startswith("ort"):
            runs = timings["session_runs"]
            batching = "1 per call" if runs == len(passages) else f"batch {args.batch_size}, by length ({runs} run{'s' * (runs != 1)})"
        peak = int8_peak if row["int8"] else fp32_peak
        achieved = total_flops / seconds / 1e9
        share = achieved / peak
        if reference is not None:
            v = result["vectors"] / np.linalg.norm(result["vectors"], axis=1, keepdims=True)
            r = reference / np.linalg.norm(reference, axis=1, keepdims=True)
            cosine = np.sum(v * r, axis=1)
            cos_text = f"{cosine.mean():.5f} / {cosine.min():.5f}"
        else:
            cosine, cos_text = None, "(no ort-fp32 row)"
        print(f"| {label} | {row['precision']} | {batching} | {len(passages) / seconds:.1f} | "
              f"{total_tokens / seconds:,.0f} | {100 * share:.1f}% ({achieved:.0f} G{'OP' if row['int8'] else 'FLOP'}/s) | "
              f"{cos_text} |")
        summary.append({"engine": row["name"], "label": label, "precision": row["precision"], "batching": batching,
                        "seconds": timings["seconds"], "passages_per_s": len(passages) / seconds,
                        "tokens_per_s": total_tokens / seconds, "achieved_gflops": achieved, "share_of_peak": share,
                        "cosine_mean": None if cosine is None else float(cosine.mean()),
                        "cosine_min": None if cosine is None else float(cosine.min()),
                        "load_s": timings["load_s"], "versions": timings["versions"]})
    print(f"\nGEMM peak, {threads} threads, M = batch {args.batch_size} x {round(float(lengths.mean()))} tokens = {m}:")
    print(f"- fp32 rows' peak: {fp32_peak:.0f} GFLOP/s ({fp32_peak_source})")
    print(f"- numpy fp32 matmul ({blas}): {_fmt_peak(peaks['numpy fp32'], 'GFLOP/s')}")
    print(f"- ONNX Runtime MatMul fp32: {_fmt_peak(peaks['ORT MatMul fp32'], 'GFLOP/s')}")
    print(f"- int8 rows' peak: {int8_peak:.0f} GOP/s, ONNX Runtime MatMulInteger: "
          f"u8 x s8 {_fmt_peak(peaks['ORT MatMulInteger u8 x s8'], 'GOP/s')}; "
          f"s8 x s8 {_fmt_peak(peaks['ORT MatMulInteger s8 x s8'], 'GOP/s')}")
    if static_kind == "dynamic":
        print("\nNote: the artifact's model.int8.onnx is still dynamically quantized (DynamicQuantizeLinear in its graph), "
              "so the ort-int8-static row runs a dynamic model as OnnxEncoder runs int8 today.")
    (work / "results.json").write_text(json.dumps(
        {"model": str(args.model), "passages": len(passages), "tokens": total_tokens, "flops": total_flops,
         "threads": threads, "batch_size": args.batch_size, "repeats": args.repeats,
         "model_shape": {"hidden": d, "ffn": f, "layers": layers},
         "fp32_peak": {"gflops": fp32_peak, "from": fp32_peak_source, "blas": blas}, "int8_peak_gops": int8_peak,
         "peaks": {k: [{"shape": list(r["shape"]), "gops": r["gflops"]} for r in v] for k, v in peaks.items()},
         "rows": summary}, indent=2), encoding="utf-8")
    if args.map:
        run_map(args, artifact, info, dynamic_dir, env, work)
    print(f"\n(results: {(work / 'results.json').relative_to(ROOT)}; logs: {(work / 'logs').relative_to(ROOT)})",
          file=sys.stderr)


def plan_rows(args, artifact: Path, info, st_dir: Path, work: Path, dynamic_dir: Path, static_kind, problems) -> list[dict]:
    venv = sys.executable
    batch = f"batch {args.batch_size}"
    st5 = PEERS / "st5-onnx" / "bin" / "python"
    fastembed = PEERS / "fastembed" / "bin" / "python"
    # sentence-transformers' ONNX export of the folder, cached per folder (--st-model: another one)
    custom = getattr(args, "st_model", None)
    st_onnx_dir = work / ("st-onnx" if not custom else "st-onnx-" + hashlib.sha1(str(st_dir).encode()).hexdigest()[:8])

    def export_st_onnx():
        if (st_onnx_dir / "onnx" / "model.onnx").is_file():
            return True, ""
        print("  exporting the sentence-transformers folder to ONNX (sentence-transformers 5 / optimum, once) ...",
              file=sys.stderr)
        return run_logged([str(st5), str(WORKER), "--export-st-onnx", "--model", str(st_dir), "--out", str(st_onnx_dir)],
                          worker_env(args.threads, work / "hf-home"), work / "logs" / "export-st-onnx.log",
                          args.worker_timeout)

    static_label = {"static": "int8 static (QDQ)", "dynamic": "int8 (artifact: dynamic)"}.get(static_kind, "int8")
    rows = [
        dict(name="torch", label="torch {torch} (trainer.modeling)", precision="fp32", batching=f"{batch}, in order",
             python=venv, args=["--engine", "torch", "--model", str(st_dir)], int8=False,
             needs=(venv, "torch")),
        dict(name="st-torch", label="sentence-transformers {sentence_transformers} (torch {torch})", precision="fp32",
             batching=f"{batch}, by length", python=venv,
             args=["--engine", "st", "--backend", "torch", "--model", str(st_dir)], int8=False,
             needs=(venv, "sentence_transformers")),
        dict(name="st-onnx", label="sentence-transformers {sentence_transformers} (ONNX, ORT {onnxruntime})",
             precision="fp32", batching=f"{batch}, by length", python=str(st5),
             args=["--engine", "st", "--backend", "onnx", "--model", str(st_onnx_dir)], int8=False,
             needs=(str(st5), "sentence_transformers"), prepare=export_st_onnx),
        dict(name="fastembed", label="fastembed {fastembed} (ORT {onnxruntime})", precision="fp32",
             batching=f"{batch}, in order", python=str(fastembed),
             args=["--engine", "fastembed", "--model", str(work / "fastembed"), "--dim", str(info.contract.dim)],
             int8=False, needs=(str(fastembed), "fastembed"),
             prepare=lambda: (fastembed_folder(artifact, st_dir, work / "fastembed", info), (True, ""))[1]),
        dict(name="ort-fp32", label="ONNX Runtime {onnxruntime} (OnnxEncoder)", precision="fp32", batching=batch,
             python=venv, args=["--engine", "ort", "--model", str(artifact), "--precision", "fp32"], int8=False),
        dict(name="ort-int8-dynamic", label="ONNX Runtime {onnxruntime} (OnnxEncoder)", precision="int8 dynamic",
             batching="1 per call", python=venv,
             args=["--engine", "ort", "--model", str(dynamic_dir), "--precision", "int8", "--per-call"], int8=True),
        dict(name="ort-int8-static", label="ONNX Runtime {onnxruntime} (OnnxEncoder)", precision=static_label,
             batching=batch, python=venv, args=["--engine", "ort", "--model", str(artifact), "--precision", "int8"],
             int8=True),
    ]
    rows = [row for row in rows if row["name"] in args.engines]
    for row in rows:
        if row["name"] in problems:
            row["skip"] = problems[row["name"]]
        elif row["name"] == "ort-int8-static" and "int8" not in info.files:
            row["skip"] = "the artifact has no int8 model"
        elif "needs" in row:
            python, module = row["needs"]
            if not Path(python).exists() or not _has_module(python, module):
                row["skip"] = NOT_INSTALLED if python != venv else f"not installed ({module} missing in {venv})"
    return rows


# ------------------------------------------------------------------------------------------------ mAP

def _reusable(report_dir: Path, fingerprint: str, data: Path, languages: list[str]) -> dict | None:
    """A committed report row that measured exactly this model file: results and where they are from."""
    for path in sorted(report_dir.rglob("report.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        settings = report.get("settings", {})
        if report.get("benchmark") != "lareqa" or settings.get("split") != "test":
            continue
        if Path(str(settings.get("data", ""))).resolve() != data.resolve():
            continue
        if sorted(str(settings.get("languages", "")).split()) != sorted(languages):
            continue
        for key, model in report.get("models", {}).items():
            if model.get("fingerprint") == fingerprint and model.get("calibration", "none") == "none":
                where = path.parent.relative_to(ROOT) if path.is_relative_to(ROOT) else path.parent
                return {"results": model["results"], "source": f"reused: {where} ({key})"}
    return None


def _int8_batching(artifact: Path) -> str:
    """How OnnxEncoder runs the artifact's int8 model: one text per call, or batched (three short texts)."""
    from encoder import OnnxEncoder

    encoder = OnnxEncoder(artifact, precision="int8", threads=1, batch_size=32)
    calls, run = [], encoder._run
    encoder._run = lambda batch: (calls.append(len(batch)), run(batch))[1]
    encoder.encode(["a", "b c", "d e f"], "passage")
    return "1 per call" if len(calls) == 3 else "batched"


def run_map(args, artifact: Path, info, dynamic_dir: Path, env: dict, work: Path) -> None:
    from encoder.artifact import load_artifact_info
    from encoder.runtime import RUNTIME_VERSION

    data = Path(args.data)
    languages = sorted(p.stem for p in data.glob("*.json") if p.stem != "split")
    chosen = sorted(args.map_languages) if args.map_languages else languages
    static_kind = int8_kind(artifact / info.files["int8"]["path"]) if "int8" in info.files else None
    rows = [("fp32", "fp32", artifact, "fp32", [], "batched", info.files["fp32"]["path"])]
    if (dynamic_dir / "artifact.json").is_file():
        rows.append(("int8-dynamic", "int8 dynamic", dynamic_dir, "int8", ["--batch-size", "1"], "1 per call",
                     f"quantize_dynamic({info.files['fp32']['path']})"))
    if "int8" in info.files:
        label = {"static": "int8 static (QDQ)", "dynamic": "int8 (artifact: dynamic)"}.get(static_kind, "int8")
        rows.append(("int8-artifact", label, artifact, "int8", [], _int8_batching(artifact),
                     info.files["int8"]["path"]))
    table = []
    for name, label, model_dir, precision, extra, batching, file_name in rows:
        model_info = load_artifact_info(model_dir)
        fingerprint = f"{model_info.fingerprint(precision)}-r{RUNTIME_VERSION}"
        found = None if args.map_languages else _reusable(ROOT / "reports", fingerprint, data, languages)
        if found is None:
            out = work / "lareqa" / name
            command = [sys.executable, "-m", "evaluation", "lareqa", "--model", str(model_dir), "--name", name,
                       "--precision", precision, "--split", "test", "--data", str(data), "--threads", str(args.threads),
                       "--out", str(out), "--no-progress", *extra]
            if args.map_languages:
                command += ["--languages", *chosen]
            print(f"evaluating {label} on the XQuAD-R test half (minutes) ...", file=sys.stderr)
            ok, why = run_logged(command, env, work / "logs" / f"lareqa-{name}.log", args.worker_timeout)
            if not ok:
                table.append((label, file_name, fingerprint, batching, None, why))
                continue
            report = json.loads((out / "report.json").read_text(encoding="utf-8"))
            model = next(iter(report["models"].values()))
            found = {"results": model["results"], "source": f"measured now: {out.relative_to(ROOT)}"}
        table.append((label, file_name, fingerprint, batching, found["results"], found["source"]))
    print(f"\nXQuAD-R test half, LAReQA mAP ({' '.join(chosen)}; no calibration), `python -m evaluation lareqa --split test`\n")
    print("| precision | model file | batching | multilingual mAP | mono mAP | cross mAP | source |")
    print("|---|---|---|---:|---:|---:|---|")
    for label, file_name, fingerprint, batching, results, source in table:
        if results is None:
            print(f"| {label} | {file_name} | {batching} | {source} | | | |")
            continue
        print(f"| {label} | {file_name} (`{fingerprint}`) | {batching} | {results['multilingual_map']:.3f} | "
              f"{results['mono_map']:.3f} | {results['cross_map']:.3f} | {source} |")


if __name__ == "__main__":
    main()
