"""Trial: OpenVINO (CPU plugin) against ONNX Runtime on the served model's ONNX files, same batches.

    python3 -m venv var/peers/openvino && var/peers/openvino/bin/pip install openvino numpy tokenizers
    var/peers/openvino/bin/python bench/peers/openvino_trial.py --model DIR [--passages 512] [--threads 2]
        [--batch-size 32] [--repeats 3] [--single N] [--rows NAME ...] [--ort-python .venv/bin/python]

DIR is an artifact folder (model.onnx fp32, model.int8.onnx static QDQ int8, tokenizer.json). Texts: "passage: " +
XQuAD-R sentences (bench/bench_encoder.py load_texts, ../shared/data/xquad-r), tokenized with DIR/tokenizer.json
(truncation at 512, no padding), sorted by length, batches of --batch-size padded with the pad id and an attention
mask: the batches encoder.OnnxEncoder makes. Every row runs exactly these arrays.

ONNX Runtime runs in a worker process under the project's .venv (this file with --ort-worker), with the options
OnnxEncoder/encode_worker use (intra_op = --threads, inter_op 1, ORT_ENABLE_ALL); it times itself, so pipe
overhead is not counted. OpenVINO runs here: core.compile_model(model, "CPU", {INFERENCE_NUM_THREADS, PERFORMANCE_HINT,
INFERENCE_PRECISION_HINT}), dynamic [batch, sequence] inputs. LATENCY rows run the batches one after another on one
infer request (as the service does); THROUGHPUT rows submit all batches to an AsyncInferQueue with the compiled
model's OPTIMAL_NUMBER_OF_INFER_REQUESTS, so its streams run batches concurrently.

Every row is warmed up (all batches once, which also gives its vectors), then timed over all batches --repeats times,
the rows interleaved (the order rotated each repeat) so that a shared CPU's load falls on all of them alike; the
median is reported. Quality: cosine of each row's vectors to ORT fp32's (mean / min). Batch independence: --single
texts (spread over the sorted order) are embedded alone (batch 1, unpadded) and compared with their batch vectors
(max |delta| over all components; the service requires <= 1e-6); the same texts are also run alone padded to their
batch's width, which tells a dependence on the batch from one on the padding.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ ORT worker

def ort_worker(args) -> None:
    import numpy as np
    import onnxruntime as ort

    data = np.load(args.batches)
    n_batches = int(data["n_batches"])
    batches = [(data[f"ids{i}"], data[f"mask{i}"]) for i in range(n_batches)]
    sessions = {}
    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        start = time.perf_counter()
        sessions[precision] = ort.InferenceSession(str(Path(args.model) / name), options,
                                                   providers=["CPUExecutionProvider"])
        print(json.dumps({"loaded": precision, "seconds": time.perf_counter() - start}), flush=True)

    def run(session, ids, mask):
        return session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]

    print(json.dumps({"ready": True, "version": ort.__version__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        session = sessions[cmd["precision"]]
        if cmd["cmd"] == "batches":
            start = time.perf_counter()
            out = [run(session, ids, mask) for ids, mask in batches]
            seconds = time.perf_counter() - start
            np.save(cmd["out"], np.concatenate(out))
            print(json.dumps({"seconds": seconds}), flush=True)
        elif cmd["cmd"] == "single":
            single = np.load(cmd["ids"], allow_pickle=True)
            out = [run(session, ids[None, :], (ids >= 0 if mask is None else mask)[None, :].astype(np.int64))
                   for ids, mask in single]
            np.save(cmd["out"], np.concatenate(out))
            print(json.dumps({"ok": True}), flush=True)
        elif cmd["cmd"] == "quit":
            break


class OrtRow:
    runtime = "ONNX Runtime " + "?"

    def __init__(self, worker, precision: str, tmp: Path) -> None:
        self.worker, self.precision, self.tmp = worker, precision, tmp
        self.hint = "-"
        self.label = f"ort-{precision}"
        self.info = ""

    def batches(self):
        import numpy as np

        out = self.tmp / f"{self.label}.npy"
        result = self.worker.ask({"cmd": "batches", "precision": self.precision, "out": str(out)})
        return result["seconds"], np.load(out)

    def single(self, pairs):
        import numpy as np

        arr = np.empty((len(pairs), 2), dtype=object)
        arr[:] = [(np.asarray(ids, dtype=np.int64), mask) for ids, mask in pairs]
        path = self.tmp / "single_ids.npy"
        np.save(path, arr, allow_pickle=True)
        out = self.tmp / f"{self.label}-single.npy"
        self.worker.ask({"cmd": "single", "precision": self.precision, "ids": str(path), "out": str(out)})
        return np.load(out)


class OrtWorker:
    def __init__(self, python: str, model: Path, batches: Path, threads: int, env: dict) -> None:
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--ort-worker", "--model", str(model),
             "--batches", str(batches), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        self.loads = []
        while True:
            msg = self._read()
            if "loaded" in msg:
                self.loads.append(msg)
            if msg.get("ready"):
                self.version = msg["version"]
                break

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"ORT worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit", "precision": "fp32"}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------------ OpenVINO rows

class OvRow:
    def __init__(self, core, model, precision: str, exec_precision: str, hint: str, threads: int) -> None:
        import openvino as ov

        self.precision = precision  # the model file: fp32 or int8
        self.exec_precision = exec_precision  # INFERENCE_PRECISION_HINT: f32 or bf16
        self.hint = hint
        self.label = f"ov-{precision}-{exec_precision}-{hint.lower()}"
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": hint,
                  "INFERENCE_PRECISION_HINT": exec_precision}
        start = time.perf_counter()
        self.compiled = core.compile_model(model, "CPU", config)
        self.compile_seconds = time.perf_counter() - start
        self.request = self.compiled.create_infer_request()
        self.n_requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = ov.AsyncInferQueue(self.compiled, self.n_requests) if hint == "THROUGHPUT" else None
        streams = self.compiled.get_property("NUM_STREAMS")
        got_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.info = (f"compile {self.compile_seconds:.1f}s, streams {streams}, requests {self.n_requests}, "
                     f"inference precision {got_precision}, {runtime_precisions(self.compiled)}")

    def _infer(self, ids, mask):
        return self.request.infer({"input_ids": ids, "attention_mask": mask})[0].copy()

    def batches_from(self, batches):
        import numpy as np

        start = time.perf_counter()
        if self.queue is None:
            out = [self._infer(ids, mask) for ids, mask in batches]
        else:
            out = [None] * len(batches)

            def done(request, index):
                out[index] = request.get_output_tensor(0).data.copy()

            self.queue.set_callback(done)
            for index, (ids, mask) in enumerate(batches):
                self.queue.start_async({"input_ids": ids, "attention_mask": mask}, userdata=index)
            self.queue.wait_all()
        seconds = time.perf_counter() - start
        return seconds, np.concatenate(out)

    def single(self, pairs):
        import numpy as np

        return np.concatenate([self._infer(np.asarray(ids, dtype=np.int64)[None, :],
                                           (np.ones(len(ids), dtype=np.int64) if mask is None else mask)[None, :])
                               for ids, mask in pairs])


def runtime_precisions(compiled) -> str:
    """How the heavy ops of the compiled graph run: runtime precision of its FullyConnected/MatMul/Subgraph nodes."""
    from collections import Counter

    counts = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if layer in ("FullyConnected", "MatMul", "Convolution", "Gemm", "Subgraph", "ScaledDotProductAttention"):
            precision = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
            counts[f"{layer}:{precision}"] += 1
    return " ".join(f"{k}x{v}" for k, v in sorted(counts.items()))


# ------------------------------------------------------------------------------------ main

def make_batches(model_dir: Path, n_passages: int, batch_size: int, data_dir: Path):
    import numpy as np
    from tokenizers import Tokenizer

    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from bench_encoder import load_texts

    passages, _ = load_texts(data_dir, n_passages, 0)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=512)
    pad = tokenizer.token_to_id("<pad>") or 0
    encodings = [e.ids for e in tokenizer.encode_batch(["passage: " + p for p in passages])]
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [encodings[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids in chunk)
        ids = np.full((len(chunk), width), pad, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        batches.append((ids, mask))
    sorted_ids = [encodings[i] for i in order]  # row k of the concatenated batch outputs is sorted_ids[k]
    return batches, sorted_ids, pad


def cosines(a, b):
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=128,
                        help="texts embedded alone for the batch-independence check (0: all)")
    parser.add_argument("--rows", nargs="*", default=None,
                        help="subset of row labels (ort-fp32 ort-int8 ov-fp32-f32-latency ...); default all")
    parser.add_argument("--ort-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xquad-r"))
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ort_worker:
        return ort_worker(args)

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import openvino as ov

    model_dir = Path(args.model)
    load_before = os.getloadavg()
    batches, sorted_ids, pad = make_batches(model_dir, args.passages, args.batch_size, Path(args.data))
    n = len(sorted_ids)
    lengths = [len(ids) for ids in sorted_ids]
    print(f"# {n} passages, {len(batches)} batches of {args.batch_size}, tokens/passage mean "
          f"{statistics.mean(lengths):.1f} max {max(lengths)}, pad id {pad}; {args.threads} threads; "
          f"model {model_dir.resolve()}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="ov-trial-"))
    npz = {"n_batches": np.array(len(batches))}
    for i, (ids, mask) in enumerate(batches):
        npz[f"ids{i}"], npz[f"mask{i}"] = ids, mask
    np.savez(tmp / "batches.npz", **npz)

    wanted = set(args.rows) if args.rows else None
    want = lambda label: wanted is None or label in wanted or label == "ort-fp32"  # noqa: E731 (ORT fp32: the reference)

    worker = OrtWorker(args.ort_python, model_dir, tmp / "batches.npz", args.threads, dict(os.environ))
    rows = []
    for precision in ("fp32", "int8"):
        row = OrtRow(worker, precision, tmp)
        row.runtime = f"ONNX Runtime {worker.version}"
        row.exec_precision = "f32" if precision == "fp32" else "int8 QDQ"
        if want(row.label):
            rows.append(row)
    core = ov.Core()
    ov_version = ov.get_version()
    print(f"# ONNX Runtime {worker.version} (session loads: "
          + ", ".join(f"{m['loaded']} {m['seconds']:.1f}s" for m in worker.loads)
          + f"); OpenVINO {ov_version}; CPU {core.get_property('CPU', 'FULL_DEVICE_NAME')}, capabilities "
          f"{core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}", flush=True)

    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        labels = [f"ov-{precision}-{p}-{h}" for p in ("f32", "bf16") for h in ("latency", "throughput")]
        if not any(want(label) for label in labels):
            continue
        model = core.read_model(str(model_dir / name))
        for port in model.inputs:
            if port.get_partial_shape().is_static:
                model.reshape({port.get_any_name(): ov.PartialShape([-1, -1]) for port in model.inputs})
                break
        for exec_precision in ("f32", "bf16"):
            for hint in ("LATENCY", "THROUGHPUT"):
                if not want(f"ov-{precision}-{exec_precision}-{hint.lower()}"):
                    continue
                row = OvRow(core, model, precision, exec_precision, hint, args.threads)
                row.runtime = f"OpenVINO {ov_version.split('-')[0]}"
                row.batches = (lambda r: lambda: r.batches_from(batches))(row)
                rows.append(row)
                print(f"# {row.label}: {row.info}", flush=True)
        del model

    # warm-up: all batches once (every shape compiled / cached), and the vectors
    vectors = {}
    for row in rows:
        seconds, vectors[row.label] = row.batches()
        print(f"# warm-up {row.label}: {seconds:.2f}s", flush=True)
    # timed, interleaved, order rotated each repeat
    times = {row.label: [] for row in rows}
    for rep in range(args.repeats):
        shift = rep % len(rows)
        for row in rows[shift:] + rows[:shift]:
            seconds, _ = row.batches()
            times[row.label].append(seconds)
        print(f"# repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    # batch independence: texts spread over the sorted order, alone
    pick = list(range(n)) if args.single in (0, None) or args.single >= n else \
        [round(i * (n - 1) / (args.single - 1)) for i in range(args.single)]
    # (and, to tell the batch dimension from the padding, the same texts alone but padded to their batch's width)
    bs = args.batch_size
    padded_pairs = [(batches[i // bs][0][i % bs], batches[i // bs][1][i % bs]) for i in pick]
    delta, delta_padded = {}, {}
    for row in rows:
        alone = row.single([(sorted_ids[i], None) for i in pick])
        delta[row.label] = float(np.abs(alone - vectors[row.label][pick]).max())
        alone_padded = row.single(padded_pairs)
        delta_padded[row.label] = float(np.abs(alone_padded - vectors[row.label][pick]).max())
    worker.close()
    load_after = os.getloadavg()

    reference = vectors["ort-fp32"]
    results = []
    print()
    print(f"{n} passages (XQuAD-R, 'passage: ' prefix), batches of {args.batch_size} sorted by length, "
          f"{args.threads} threads, median of {args.repeats} interleaved repeats; batch-1 check on {len(pick)} texts; "
          f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f} (1 min)")
    print()
    print("| runtime | precision | hint | passages/s | cosine to ORT fp32 (mean/min) | batch-1 vs batch-32 max |Δ| |")
    print("|---|---|---|---:|---|---:|")
    for row in rows:
        median = statistics.median(times[row.label])
        cos = cosines(vectors[row.label], reference)
        model_precision = "fp32" if row.precision == "fp32" else "int8 (static QDQ)"
        precision = model_precision if row.label.startswith("ort") else f"{model_precision}, exec {row.exec_precision}"
        print(f"| {row.runtime} | {precision} | {row.hint} | {n / median:.1f} | "
              f"{cos.mean():.6f} / {cos.min():.6f} | {delta[row.label]:.1e} |")
        results.append({"label": row.label, "runtime": row.runtime, "precision": precision, "hint": row.hint,
                        "seconds": times[row.label], "passages_per_s": n / median,
                        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                        "batch1_vs_batch_max_abs": delta[row.label],
                        "batch1_padded_vs_batch_max_abs": delta_padded[row.label], "info": row.info})
    print()
    print("Batch 1 but padded to the batch's width vs batch 32, max |Δ| (0 where only the padding, not the batch, "
          "moves a vector): " + ", ".join(f"{r['label']} {r['batch1_padded_vs_batch_max_abs']:.1e}" for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                               "rows": results}, indent=1))


if __name__ == "__main__":
    main()
