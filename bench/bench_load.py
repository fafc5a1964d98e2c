"""Service load benchmark: wrk against the service's /search and /v1/embeddings at several concurrencies,
/livez latency from a separate poller process meanwhile, and the same embeddings load on Infinity serving
the same model with the same threads, in one run. Prints one Markdown table.

    .venv/bin/python bench/bench_load.py                    # c = 1 8 32 128, 15 s a level (~10 min)
    .venv/bin/python bench/bench_load.py --seconds 3 --servers babelsearch   # a quick look

The script starts each server itself on 127.0.0.1 (a free port), one after the other, waits until it is
ready, runs the levels and stops it (on Ctrl-C too); it sends traffic to nothing else.

- babelsearch as `make serve` runs it, in the production configuration (int8, calibration center,
  BABELSEARCH_THREADS=2; every other BABELSEARCH_ variable of the calling shell is dropped, --env adds
  some) with the demo collection seeded into a temporary index; ready = /readyz answers 200.
- Infinity (infinity-emb 0.0.78 in var/peers/infinity: `bench/peers/setup.sh infinity`), ready = /health.
  Default engine optimum (ONNX Runtime): the service's own ONNX file (model.int8.onnx, or model.onnx with
  --infinity-precision fp32) with the encoder's last hidden states as its output, since Infinity pools
  itself (mean over the attention mask, then L2: the contract's pooling); config and tokenizer from the
  model's sentence-transformers folder (bench/peers/prepare.py st-folder). --infinity-engine torch serves
  that folder with sentence-transformers in float32. ONNX Runtime's intra-op threads (torch's threads) are
  set to --threads, as BABELSEARCH_THREADS is for the service. Infinity batches concurrent requests
  itself (--infinity-batch-size), and has no response cache here (--no-vector-disk-cache). The model files
  Infinity reads are made once under var/bench/load/ (rebuilt when the artifact's file changes); server logs
  go to var/bench/load/logs/.

Both embed the same strings: babelsearch's /v1/embeddings gets the bare question and adds "query: " itself
(input_type defaults to query); Infinity applies no prompt, so it gets "query: " + the question. The run
checks this: it prints the cosine between the two servers' vectors for a few questions.

Load: wrk with one thread (it shares the cores with the server; so does the poller), closed loop, each
connection sends its next request when the previous one is answered; a 429 makes the client wait its
Retry-After first (--no-retry-after: resend at once). Bodies: XQuAD-R questions (../shared/data/xquad-r),
the languages interleaved; /search with k=10; the "x16" rows send 16 questions per embeddings request
(at c = 1, 8, 32: --batch-levels).
requests/s counts 2xx answers; p50/p99 are wrk's, over every response (429s included). The poller GETs
/livez (Infinity: /health) every --poll-interval seconds over one keep-alive connection. After each level
the script waits until the work wrk left in flight is done (single-text requests answered about as fast as
on the idle server) before the next one starts.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.lareqa import read_squad_sentences  # noqa: E402

LUA = Path(__file__).with_name("bench_load.lua")
PREPARE = Path(__file__).with_name("peers") / "prepare.py"
WORK = ROOT / "var" / "bench" / "load"
DEFAULT_MODEL = ROOT / "artifacts" / "models" / "e5-small-recommended"
DEFAULT_INFINITY = ROOT / "var" / "peers" / "infinity"

# Run by Infinity's interpreter: ONNX Runtime sessions (and torch) get the given intra-op threads, then
# Infinity's own command line runs. argv: THREADS v2 --model-id ...
INFINITY_LAUNCHER = r"""
import sys
threads = int(sys.argv[1])
sys.argv = ["infinity_emb"] + sys.argv[2:]
import onnxruntime as ort
class Session(ort.InferenceSession):
    def __init__(self, path, sess_options=None, providers=None, provider_options=None, **kwargs):
        sess_options = sess_options or ort.SessionOptions()
        sess_options.intra_op_num_threads = threads
        print(f"bench_load: ONNX Runtime session with {threads} intra-op threads", file=sys.stderr, flush=True)
        super().__init__(path, sess_options=sess_options, providers=providers, provider_options=provider_options,
                         **kwargs)
ort.InferenceSession = Session
import torch
torch.set_num_threads(threads)
from infinity_emb.cli import cli
cli()
"""


@dataclass
class Endpoint:
    label: str  # as the table shows it
    path: str
    bodies: list[str]  # JSON request bodies, sent in turn
    texts: int = 1  # texts per request


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict
    ready_path: str
    health_path: str  # what the poller GETs
    description: str
    cwd: Path = ROOT
    port: int = 0
    log: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        with log.open("wb") as out:
            # Its own session: Ctrl-C reaches this script (which stops it), not the server directly.
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"error: {self.name} exited with {self.process.returncode} before it was ready; "
                                 f"its log ({self.log}):\n{self.log_tail()}")
            try:
                status, _ = request(self.port, "GET", self.ready_path, timeout=5)
                if status == 200:
                    return time.monotonic() - start
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        raise SystemExit(f"error: {self.name} not ready after {timeout:.0f} s; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log and self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def request(port: int, method: str, path: str, body=None, timeout: float = 60) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def questions(data: Path, per_language: int) -> list[str]:
    """Distinct XQuAD-R questions, ``per_language`` of each language, interleaved (en, ar, de, ..., en, ...)."""
    groups = []
    for path in sorted(data.glob("*.json")):
        if path.stem == "split":
            continue
        texts = list(dict.fromkeys(q.question.strip() for q in read_squad_sentences(path)))[:per_language]
        groups.append(texts)
    if not groups:
        raise SystemExit(f"error: no XQuAD-R files in {data} (--data)")
    return [text for row in itertools.zip_longest(*groups) for text in row if text]


# --- model files for Infinity ---------------------------------------------------------------------------

def st_folder(model: Path, out: Path) -> Path:
    """The model as a sentence-transformers folder (config, tokenizer, weights), made once by bench/peers/prepare.py."""
    if not PREPARE.is_file():
        raise SystemExit(f"error: {PREPARE} is missing: write the folder with trainer.st_export and pass --st-model")
    subprocess.run([sys.executable, str(PREPARE), "st-folder", "--artifact", str(model), "--out", str(out)],
                   cwd=ROOT, check=True)
    return out


def last_hidden_state_onnx(source: Path, target: Path) -> None:
    """``source`` with its output replaced by the encoder's token states (``last_hidden_state``, what
    optimum's ORTModelForFeatureExtraction returns to Infinity), the pooling nodes dropped."""
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    graph = model.graph
    norms = [node for node in graph.node if node.op_type == "LayerNormalization"]
    if not norms:
        raise SystemExit(f"error: {source}: no LayerNormalization node, cannot find the encoder's last hidden states")
    states = norms[-1].output[0]  # the last layer's output LayerNorm: what the graph pools
    needed, keep = {states}, []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    graph.node.append(helper.make_node("Identity", [states], ["last_hidden_state"], name="bench_load_states"))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    dim = next(o.type.tensor_type.shape.dim[1].dim_value for o in graph.output)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT,
                                                      ["batch", "sequence", dim]))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def infinity_onnx_folder(model: Path, st_dir: Path, precision: str, out: Path) -> tuple[Path, str]:
    """A folder optimum loads: the artifact's ONNX file cut at the token states, config and tokenizer
    files from the sentence-transformers folder. Rebuilt when the artifact's file changes."""
    info = json.loads((model / "artifact.json").read_text())
    entry = info["files"][precision]
    # Infinity's optimum engine picks a file with "quantize" in its name on CPU when there is one.
    name = "model_quantized.onnx" if precision == "int8" else "model.onnx"
    stamp = {"source": str(model / entry["path"]), "sha256": entry["sha256"], "file": name}
    if (out / "bench-source.json").is_file() and json.loads((out / "bench-source.json").read_text()) == stamp:
        return out, name
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for file in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(st_dir / file, staging / file)
    print(f"writing {out / name} (from {model / entry['path']})", file=sys.stderr)
    last_hidden_state_onnx(model / entry["path"], staging / name)
    (staging / "bench-source.json").write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out, name


# --- servers --------------------------------------------------------------------------------------------

def babelsearch_server(args, work: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BABELSEARCH_")}
    env.update({
        "BABELSEARCH_MODEL_DIR": str(args.model), "BABELSEARCH_PRECISION": "int8",
        "BABELSEARCH_CALIBRATION": "center", "BABELSEARCH_THREADS": str(args.threads),
        "BABELSEARCH_INDEX_DIR": str(work / "index"), "BABELSEARCH_SEED_COLLECTION": str(args.collection),
    })
    extra = dict(item.split("=", 1) for item in args.env)
    env.update(extra)
    settings = ", ".join(f"{k.removeprefix('BABELSEARCH_')}={env[k]}" for k in
                         ("BABELSEARCH_PRECISION", "BABELSEARCH_CALIBRATION", "BABELSEARCH_THREADS"))
    if extra:
        settings += ", " + ", ".join(f"{k}={v}" for k, v in extra.items())
    documents = sum(1 for line in args.collection.open(encoding="utf-8") if line.strip())
    return Server("babelsearch", [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", "{port}",
                                  "--log-level", "warning"], env, "/readyz", "/livez",
                  f"babelsearch {git_revision()}: `{rel(args.model)}`, {settings}, "
                  f"`{rel(args.collection)}` ({documents} documents) in a temporary index")


def infinity_server(args, model_dir: Path, served_file: str | None) -> Server:
    python = args.infinity_venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"error: {python} is missing: run `bench/peers/setup.sh infinity` (or pass --infinity-venv)")
    versions = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(' '.join("
                               "m.version(p) for p in ('infinity-emb', 'onnxruntime', 'torch')))"],
                              capture_output=True, text=True, check=True).stdout.split()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINITY_")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(WORK / "hf-home"), "DO_NOT_TRACK": "1",
                "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    # Run inside the model folder as --model-id ".": Infinity 0.0.78 hands optimum (>= 2) the ONNX file's path
    # as found under --model-id, and optimum matches it against bare file names only.
    argv = [str(python), "-c", INFINITY_LAUNCHER, str(args.threads), "v2", "--model-id", ".",
            "--served-model-name", args.model.name, "--engine", args.infinity_engine, "--device", "cpu",
            "--batch-size", str(args.infinity_batch_size), "--no-vector-disk-cache", "--pooling-method", "mean",
            "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    if args.infinity_engine == "optimum":
        argv += ["--onnx-disable-optimize"]
        engine = (f"engine optimum (ONNX Runtime {versions[1]}): `{served_file}` = `{rel(args.model)}/"
                  f"{json.loads((args.model / 'artifact.json').read_text())['files'][args.infinity_precision]['path']}` "
                  f"with the token states as output (Infinity pools), no ONNX graph rewrite (--onnx-disable-optimize)")
    else:
        argv += ["--dtype", "float32", "--no-bettertransformer"]
        engine = f"engine torch {versions[2]} (sentence-transformers, float32): `{rel(model_dir)}`"
    return Server("Infinity", argv, env, "/health", "/health",
                  f"Infinity {versions[0]}: {engine}, {args.threads} intra-op threads, "
                  f"batch size {args.infinity_batch_size}", cwd=model_dir)


def babelsearch_endpoints(texts: list[str], batch: int) -> list[Endpoint]:
    batches = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    return [
        Endpoint("/search", "/search", [json.dumps({"query": q, "k": 10}, ensure_ascii=False) for q in texts]),
        Endpoint("/v1/embeddings", "/v1/embeddings", [json.dumps({"input": q}, ensure_ascii=False) for q in texts]),
        Endpoint(f"/v1/embeddings x{batch}", "/v1/embeddings",
                 [json.dumps({"input": b}, ensure_ascii=False) for b in batches], batch),
    ]


def infinity_endpoints(texts: list[str], batch: int, model: Path) -> list[Endpoint]:
    # What babelsearch's /v1/embeddings prepends (input_type query, the default): the contract's query prefix.
    prefix = json.loads((model / "artifact.json").read_text())["contract"]["query_prefix"]
    prefixed = [prefix + q for q in texts]
    model = model.name
    batches = [prefixed[i:i + batch] for i in range(0, len(prefixed) - batch + 1, batch)]
    return [
        Endpoint("/embeddings", "/embeddings",
                 [json.dumps({"model": model, "input": q}, ensure_ascii=False) for q in prefixed]),
        Endpoint(f"/embeddings x{batch}", "/embeddings",
                 [json.dumps({"model": model, "input": b}, ensure_ascii=False) for b in batches], batch),
    ]


# --- load -----------------------------------------------------------------------------------------------

def poll(port: int, path: str, interval: float, stop, out) -> None:
    """In its own process: GET ``path`` every ``interval`` s over one keep-alive connection until ``stop``."""
    latencies, failures, connection = [], 0, None
    try:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if connection is not None:
                    connection.close()
                connection = None
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                failures += 1
            stop.wait(interval)
    except KeyboardInterrupt:
        pass
    out.put((latencies, failures))


def wrk_level(args, server: Server, endpoint: Endpoint, bodies: Path, connections: int, seconds: float,
              poll_health: bool) -> dict:
    argv = [args.wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", f"{args.timeout:g}s", "-s", str(LUA),
            f"http://127.0.0.1:{server.port}", "--", str(bodies), endpoint.path]
    env = {**os.environ, "BENCH_LOAD_RETRY_AFTER": "0" if args.no_retry_after else "1"}
    context = multiprocessing.get_context("fork")
    stop, out, poller = context.Event(), context.Queue(), None
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if poll_health:
            poller = context.Process(target=poll, args=(server.port, server.health_path, args.poll_interval, stop, out),
                                     daemon=True)
            poller.start()
        stdout, stderr = process.communicate(timeout=seconds + args.timeout + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stop.set()
    health, failures = out.get(timeout=60) if poller else ([], 0)
    if poller:
        poller.join(10)
    line = next((line for line in stdout.splitlines() if line.startswith("BENCH_LOAD ")), None)
    if process.returncode != 0 or line is None:
        raise SystemExit(f"error: wrk exited with {process.returncode}: {' '.join(argv)}\n{stdout}\n{stderr}")
    summary = json.loads(line.removeprefix("BENCH_LOAD "))
    duration = summary["duration_us"] / 1e6
    ok = summary["requests"] - summary["non2xx"]
    health.sort()
    return {
        "server": server.name, "endpoint": endpoint.label, "path": endpoint.path, "c": connections,
        "seconds": round(duration, 2), "texts_per_request": endpoint.texts,
        "requests_per_s": ok / duration, "texts_per_s": ok * endpoint.texts / duration,
        "p50_ms": summary["p50_us"] / 1000, "p99_ms": summary["p99_us"] / 1000, "max_ms": summary["max_us"] / 1000,
        "responses": summary["requests"], "non2xx": summary["non2xx"], "n429": summary["n429"],
        "timeouts": summary["timeouts"],
        "socket_errors": summary["connect_errors"] + summary["read_errors"] + summary["write_errors"],
        "health_path": server.health_path, "health_n": len(health), "health_failures": failures,
        "health_p50_ms": percentile(health, 50), "health_p99_ms": percentile(health, 99),
        "health_max_ms": health[-1] if health else None,
    }


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q / 100 * len(sorted_values)))]


def vectors(server: Server, endpoint: Endpoint, texts: list[str]) -> np.ndarray:
    out = []
    for body in endpoint.bodies[:len(texts)]:
        status, data = request(server.port, "POST", endpoint.path, json.loads(body))
        if status != 200:
            raise SystemExit(f"error: {server.name} {endpoint.path} answered {status}: {data[:500]!r}")
        out.append(json.loads(data)["data"][0]["embedding"])
    return np.asarray(out, dtype=np.float64)


def canary_ms(server: Server, canary: Endpoint) -> tuple[int, float]:
    start = time.perf_counter()
    status, _ = request(server.port, "POST", canary.path, json.loads(canary.bodies[0]))
    return status, (time.perf_counter() - start) * 1000


def settle(args, server: Server, canary: Endpoint, idle_ms: float) -> None:
    """Wait until the work wrk left in flight is done: two single-text requests in a row answered 200 about
    as fast as on the idle server (wrk stops sending, but the server finishes what it had accepted)."""
    time.sleep(args.pause)
    limit, deadline, good = max(3 * idle_ms, idle_ms + 30), time.monotonic() + 120, 0
    while time.monotonic() < deadline:
        status, ms = canary_ms(server, canary)
        good = good + 1 if status == 200 and ms <= limit else 0
        if good == 2:
            return
        time.sleep(0.2)
    print(f"warning: {server.name} still busy 120 s after a level", file=sys.stderr)


def check_endpoint(server: Server, endpoint: Endpoint) -> None:
    status, data = request(server.port, "POST", endpoint.path, json.loads(endpoint.bodies[0]))
    if status != 200:
        raise SystemExit(f"error: {server.name} {endpoint.path} answered {status}: {data[:500]!r}")


def run_server(args, server: Server, endpoints: list[Endpoint], work: Path, results: list, sample: list[str]):
    argv = list(server.argv)
    port = free_port()
    server.argv = [str(port) if a == "{port}" else a for a in argv]
    print(f"starting {server.name} on 127.0.0.1:{port} ...", file=sys.stderr, flush=True)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    server.start(port, WORK / "logs" / f"{server.name}.log")
    try:
        took = server.wait_ready(args.startup_timeout)
        print(f"{server.name} ready after {took:.0f} s", file=sys.stderr, flush=True)
        for endpoint in endpoints:
            check_endpoint(server, endpoint)
        canary = next(e for e in endpoints if "embeddings" in e.path and e.texts == 1)
        # The vectors of the first few single-text requests, compared across servers after the run.
        sample_vectors = vectors(server, canary, sample)
        idle_ms = float(np.median([canary_ms(server, canary)[1] for _ in range(5)]))
        for endpoint in endpoints:
            bodies = work / f"{server.name}-{endpoint.label.strip('/').replace('/', '-').replace(' ', '-')}.jsonl"
            bodies.write_text("\n".join(endpoint.bodies) + "\n", encoding="utf-8")
            if args.warmup > 0:
                wrk_level(args, server, endpoint, bodies, 8, args.warmup, poll_health=False)
                settle(args, server, canary, idle_ms)
            for connections in (args.batch_levels if endpoint.texts > 1 else args.levels):
                row = wrk_level(args, server, endpoint, bodies, connections, args.seconds, poll_health=True)
                results.append(row)
                print(f"  {server.name} {endpoint.label} c={connections}: {row['requests_per_s']:.1f} req/s, "
                      f"p99 {row['p99_ms']:.1f} ms, {row['non2xx']} non-2xx, {server.health_path} p99 "
                      f"{fmt(row['health_p99_ms'])} ms", file=sys.stderr, flush=True)
                if server.process.poll() is not None:
                    raise SystemExit(f"error: {server.name} died during the run:\n{server.log_tail()}")
                settle(args, server, canary, idle_ms)
        return sample_vectors
    finally:
        server.stop()


# --- report ---------------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "(no git)"


def table(results: list[dict]) -> str:
    lines = ["| server | endpoint | c | requests/s | p50 ms | p99 ms | non-2xx (429s) | /livez p99 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        rate = f"{row['requests_per_s']:.1f}"
        if row["texts_per_request"] > 1:
            rate += f" ({row['texts_per_s']:.0f} texts/s)"
        bad = f"{row['non2xx']} ({row['n429']})"
        if row["timeouts"] or row["socket_errors"]:
            bad += f" +{row['timeouts']} timeouts, {row['socket_errors']} socket errors"
        health = fmt(row["health_p99_ms"])
        if row["health_path"] != "/livez":
            health += " †"
        if row["health_failures"]:
            health += f" ({row['health_failures']} failed)"
        p50, p99 = (fmt(row["p50_ms"]), fmt(row["p99_ms"])) if row["responses"] else ("–", "–")
        lines.append(f"| {row['server']} | {row['endpoint']} | {row['c']} | {rate} | {p50} | {p99} | {bad} | {health} |")
    return "\n".join(lines)


def targets(results: list[dict]) -> list[str]:
    def find(server, endpoint, c):
        return next((r for r in results if r["server"] == server and r["endpoint"] == endpoint and r["c"] == c), None)

    out = []
    ours, theirs = find("babelsearch", "/v1/embeddings", 32), find("Infinity", "/embeddings", 32)
    if ours and theirs:
        ok = ours["requests_per_s"] >= theirs["requests_per_s"]
        out.append(f"- /v1/embeddings at c=32 not below Infinity's: {ours['requests_per_s']:.1f} vs "
                   f"{theirs['requests_per_s']:.1f} requests/s ({ours['requests_per_s'] / theirs['requests_per_s']:.2f}x) "
                   f"{'✓' if ok else '✗'}")
    one, many = find("babelsearch", "/search", 1), find("babelsearch", "/search", 32)
    if one and many:
        ratio = many["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] else float("inf")
        out.append(f"- /search at c=32 >= 3x c=1: {many['requests_per_s']:.1f} vs {one['requests_per_s']:.1f} "
                   f"requests/s ({ratio:.2f}x) {'✓' if ratio >= 3 else '✗'}")
    top = [r for r in results if r["server"] == "babelsearch" and r["c"] == 128]
    for row in top:
        p99 = row["health_p99_ms"]
        ok = p99 is not None and p99 < 100 and not row["health_failures"]
        out.append(f"- /livez p99 < 100 ms at c=128 ({row['endpoint']}): {fmt(p99)} ms {'✓' if ok else '✗'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", nargs="+", choices=["babelsearch", "infinity"], default=["babelsearch", "infinity"])
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 8, 32, 128], help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=15, help="length of each level")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load (c=8) per endpoint first")
    parser.add_argument("--pause", type=float, default=1,
                        help="seconds after each level before checking that its in-flight work has drained")
    parser.add_argument("--threads", type=int, default=2, help="encoder threads of both servers")
    parser.add_argument("--batch", type=int, default=16, help="questions per request of the batch variant")
    parser.add_argument("--batch-levels", nargs="+", type=int, default=[1, 8, 32],
                        help="connections for the batch variant (at 128 x 16 texts in flight one round takes "
                             "longer than a level on 2 cores)")
    parser.add_argument("--per-language", type=int, default=100, help="distinct questions per language")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the served model artifact")
    parser.add_argument("--collection", type=Path, default=ROOT / "demo" / "collection.jsonl")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "xquad-r")
    parser.add_argument("--env", action="append", default=[], metavar="BABELSEARCH_X=VALUE",
                        help="an extra setting for babelsearch (repeatable)")
    parser.add_argument("--infinity-venv", type=Path, default=DEFAULT_INFINITY)
    parser.add_argument("--infinity-engine", choices=["optimum", "torch"], default="optimum")
    parser.add_argument("--infinity-precision", choices=["int8", "fp32"], default="int8",
                        help="which of the artifact's ONNX files the optimum engine serves")
    parser.add_argument("--infinity-batch-size", type=int, default=32)
    parser.add_argument("--st-model", type=Path, default=None,
                        help="the model's sentence-transformers folder (default: made under var/bench/load/)")
    parser.add_argument("--no-retry-after", action="store_true", help="resend at once after a 429")
    parser.add_argument("--poll-interval", type=float, default=0.02, help="seconds between /livez polls")
    parser.add_argument("--timeout", type=float, default=30, help="wrk's per-request timeout, seconds")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    args.model = args.model.resolve()
    for item in args.env:
        if "=" not in item or not item.startswith("BABELSEARCH_"):
            parser.error(f"--env {item!r}: expected BABELSEARCH_NAME=VALUE")
    if not shutil.which(args.wrk):
        parser.error("wrk not found: apt-get install -y wrk (or pass --wrk)")

    # Ctrl-C (even where the caller left SIGINT ignored, as `cmd &` does) and SIGTERM end the run; the
    # finally blocks stop wrk, the poller and the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    texts = questions(args.data, args.per_language)
    sample = texts[:8]
    load = os.getloadavg()
    servers = []
    if "babelsearch" in args.servers:
        servers.append(("babelsearch", lambda work: (babelsearch_server(args, work), babelsearch_endpoints(texts, args.batch))))
    if "infinity" in args.servers:
        st_dir = args.st_model or st_folder(args.model, WORK / f"{args.model.name}-st")
        if args.infinity_engine == "optimum":
            model_dir, served = infinity_onnx_folder(args.model, st_dir, args.infinity_precision,
                                                     WORK / f"{args.model.name}-infinity-{args.infinity_precision}")
        else:
            model_dir, served = st_dir, None
        servers.append(("Infinity", lambda work: (infinity_server(args, model_dir, served),
                                                  infinity_endpoints(texts, args.batch, args.model))))

    results, samples, descriptions = [], {}, []
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        try:
            for name, make in servers:
                server, endpoints = make(work)
                descriptions.append(server.description)
                samples[name] = run_server(args, server, endpoints, work, results, sample)
        except KeyboardInterrupt:
            print("interrupted: servers stopped", file=sys.stderr)
            return 130

    wrk_version = subprocess.run([args.wrk, "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    print(f"### Load: {', '.join(name for name, _ in servers)}\n")
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start. "
          f"**The load generator ({wrk_version}, 1 thread) and the /livez poller share these cores with the "
          f"server.** One server at a time.\n")
    for description in descriptions:
        print(f"- {description}")
    retry = "resend at once" if args.no_retry_after else "wait Retry-After"
    print(f"- {args.seconds:g} s a level after {args.warmup:g} s of warm-up per endpoint; XQuAD-R questions "
          f"({len(texts)} distinct, 11 languages interleaved), /search k=10, x{args.batch} = {args.batch} questions "
          f"per request; babelsearch gets the bare question (it adds \"query: \"), Infinity \"query: \" + it. "
          f"requests/s = 2xx answers per second; p50/p99: wrk's, over all responses; clients {retry} after a 429; "
          f"/livez polled every {args.poll_interval * 1000:g} ms († Infinity: /health).\n")
    print(table(results))
    if "babelsearch" in samples and "Infinity" in samples:
        a, b = samples["babelsearch"], samples["Infinity"]
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"\nSame strings, same model: {len(sample)} questions ({len(sample)} languages), babelsearch /v1/embeddings "
              f"vs Infinity /embeddings: min cosine {cosine.min():.6f}, max |Δ| {np.abs(a - b).max():.2e}"
              + ("" if cosine.min() > 0.99 else " **(below 0.99: not the same model or not the same strings)**"))
    lines = targets(results)
    if lines:
        print("\nIssue targets:\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"servers": descriptions, "load_average": load, "rows": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
