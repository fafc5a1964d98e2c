"""One engine, one process: embed the benchmark's texts and time it (run by bench/bench_encoder.py).

    PYTHON bench/peers/encode_worker.py --engine ENGINE --model PATH --texts TEXTS.json --out DIR \\
        [--threads 2] [--batch-size 32] [--precision fp32|int8] [--per-call] [--backend torch|onnx] \\
        [--repeats 3] [--warmup N]
    var/peers/st5-onnx/bin/python bench/peers/encode_worker.py --export-st-onnx --model ST_DIR --out DIR

PYTHON is the interpreter of the engine's venv (bench/peers/setup.sh): this file imports nothing from the
project unless the engine is the project's own (``ort``: encoder.OnnxEncoder; ``torch``:
trainer.modeling), so it runs in peer venvs that do not have the project installed.

TEXTS.json: ``{"kind": "passage", "prefix": "passage: ", "texts": [...]}``. Peer engines are given
``prefix + text`` and no prompt name; the project's engines are given the text and the kind and prefix
it from the artifact's contract, which is where ``prefix`` came from: every engine embeds the same strings.

Writes DIR/vectors.npy (float32, one row per text, in the texts' order) and DIR/timings.json: load, warm-up
and per-repeat encode seconds, the library versions, and for ``ort`` how many session runs one pass took.
Thread counts: OMP_NUM_THREADS & co. come from the parent; torch.set_num_threads, ONNX Runtime's
intra_op_num_threads and fastembed's ``threads`` are set from --threads here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def make_engine(args, kind: str):
    """(encode(texts) -> array, which texts it takes: "raw" or "prefixed", info dict)."""
    import numpy as np

    info: dict = {}
    if args.engine == "ort":
        sys.path.insert(0, str(ROOT))
        from encoder import OnnxEncoder

        encoder = OnnxEncoder(args.model, precision=args.precision, threads=args.threads, batch_size=args.batch_size)
        calls = {"n": 0}
        run = encoder._run

        def counted(batch):
            calls["n"] += 1
            return run(batch)

        encoder._run = counted
        size = 1 if args.per_call else None
        info.update(calls=calls, versions=_versions("onnxruntime", "tokenizers", "numpy"),
                    max_length=encoder.contract.max_length)
        return (lambda texts: encoder.encode(texts, kind, batch_size=size)), "raw", info
    if args.engine == "torch":
        import torch

        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(ROOT))
        from trainer.modeling import load_base

        model = load_base(args.model).eval()
        info.update(versions=_versions("torch", "transformers", "tokenizers", "numpy"),
                    max_length=model.contract.max_length)
        return (lambda texts: model.embed(texts, kind, batch_size=args.batch_size).numpy()), "raw", info
    if args.engine == "st":
        import torch

        torch.set_num_threads(args.threads)
        from sentence_transformers import SentenceTransformer

        kwargs: dict = {"device": "cpu", "local_files_only": True, "backend": args.backend}
        if args.backend == "onnx":
            kwargs["model_kwargs"] = {"provider": "CPUExecutionProvider", "session_options": _ort_options(args.threads),
                                      "file_name": "onnx/model.onnx"}
        model = SentenceTransformer(args.model, **kwargs)
        info["versions"] = _versions("sentence-transformers", "torch", "transformers", "tokenizers", "onnxruntime",
                                     "optimum", "optimum-onnx", "numpy")
        info["max_length"] = model.max_seq_length

        def encode(texts):
            # No prompt_name: the texts carry their prefix already (the folder has no default prompt).
            return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False,
                                normalize_embeddings=False)

        return encode, "prefixed", info
    if args.engine == "fastembed":
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = "babelsearch/bench-encoder"
        # The artifact's model.onnx pools and normalises in the graph; its output `sentence_embedding`
        # is (batch, dim): DISABLED pooling returns it as it is, and it needs no second normalisation.
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.DISABLED, normalization=False,
                                       sources=ModelSource(hf=name), dim=args.dim, model_file="model.onnx",
                                       output_name="sentence_embedding")
        model = TextEmbedding(name, specific_model_path=args.model, threads=args.threads,
                              cache_dir=str(Path(args.out) / "fastembed-cache"))
        info["versions"] = _versions("fastembed", "onnxruntime", "tokenizers", "numpy")
        truncation = getattr(getattr(model.model, "tokenizer", None), "truncation", None) or {}
        info["max_length"] = truncation.get("max_length")
        return (lambda texts: np.stack(list(model.embed(texts, batch_size=args.batch_size)))), "prefixed", info
    raise SystemExit(f"unknown engine {args.engine!r}")


def export_st_onnx(st_dir: Path, out: Path) -> None:
    """sentence-transformers' own ONNX export (optimum) of the folder: token embeddings out, pooled by
    sentence-transformers' Pooling and Normalize modules. Written to ``out`` (a whole folder) atomically."""
    import shutil

    from sentence_transformers import SentenceTransformer

    staging = out.with_name(out.name + ".partial")
    source = out.with_name(out.name + ".source")
    for path in (staging, source):
        shutil.rmtree(path, ignore_errors=True)
    # The folder's sentence_bert_config.json passes model_args {"add_pooling_layer": false} (the torch
    # backbone is built without its unused pooler); optimum's ORTModel takes no such argument. A linked
    # copy of the folder without it is exported; the pooler does not touch the token embeddings used.
    shutil.copytree(st_dir.resolve(), source, copy_function=os.symlink)
    config_file = source / "sentence_bert_config.json"
    config = json.loads(config_file.read_text())
    config.pop("model_args", None)
    config_file.unlink()
    config_file.write_text(json.dumps(config, indent=2))
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True, backend="onnx")
    model.save_pretrained(str(staging))
    shutil.rmtree(source)
    config_file = staging / "sentence_bert_config.json"
    config = json.loads(config_file.read_text())
    config.pop("model_args", None)
    config_file.write_text(json.dumps(config, indent=2))
    if not (staging / "onnx" / "model.onnx").is_file():
        raise SystemExit(f"export wrote no {staging / 'onnx' / 'model.onnx'}")
    for weights in staging.glob("model*.safetensors"):  # the ONNX backend does not read them
        weights.unlink()
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["ort", "torch", "st", "fastembed"])
    parser.add_argument("--model", required=True, help="artifact dir (ort), sentence-transformers folder "
                        "(torch, st), or a folder with model.onnx and the tokenizer files (fastembed)")
    parser.add_argument("--texts", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="ort")
    parser.add_argument("--per-call", action="store_true", help="ort: one text per session run")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="st")
    parser.add_argument("--dim", type=int, default=384, help="fastembed: the embedding dimension")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=None, help="texts embedded before timing "
                        "(default: two batches, at least 8)")
    parser.add_argument("--export-st-onnx", action="store_true",
                        help="write sentence-transformers' ONNX export of --model to --out, then exit")
    args = parser.parse_args()
    if args.export_st_onnx:
        export_st_onnx(Path(args.model), args.out)
        return
    if args.engine is None or args.texts is None:
        parser.error("--engine and --texts are required")

    import numpy as np

    spec = json.loads(args.texts.read_text(encoding="utf-8"))
    kind, raw = spec["kind"], spec["texts"]
    start = time.perf_counter()
    encode, takes, info = make_engine(args, kind)
    load_s = time.perf_counter() - start
    texts = raw if takes == "raw" else [spec["prefix"] + text for text in raw]

    warmup = args.warmup if args.warmup is not None else max(8, 2 * (1 if args.per_call else args.batch_size))
    start = time.perf_counter()
    encode(texts[: max(1, min(warmup, len(texts)))])
    warmup_s = time.perf_counter() - start

    seconds, vectors, calls = [], None, None
    for _ in range(max(1, args.repeats)):
        if "calls" in info:
            info["calls"]["n"] = 0
        start = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        seconds.append(time.perf_counter() - start)
        if "calls" in info:
            calls = info["calls"]["n"]
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "vectors.npy", vectors)
    timings = {"engine": args.engine, "backend": args.backend if args.engine == "st" else None,
               "texts": len(texts), "load_s": load_s, "warmup_s": warmup_s, "seconds": seconds,
               "session_runs": calls, "threads": args.threads, "batch_size": args.batch_size,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "max_length": info.get("max_length"),
               "versions": info.get("versions", {})}
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
