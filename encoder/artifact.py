"""The model artifact: a directory with ONNX models, a tokenizer and ``artifact.json``.

Layout::

    artifact.json        contract, base model, files with their sha256, training config
    tokenizer.json       a `tokenizers` tokenizer (no padding/truncation baked in)
    model.onnx           fp32, inputs input_ids/attention_mask, output sentence_embedding
    model.int8.onnx      int8 variant: static QDQ (files.int8.quantization "static", trainer.quantize) or,
                         without calibration data and in older artifacts, dynamic (one text per call)
    quantization.json    the static int8 model's recipe (SmoothQuant statistics, activation ranges)

An artifact may hold one precision only (``keep_precisions``: the serving image ships int8 alone); its
``artifact.json`` then lists that file alone, so asking for the other precision is a clear error.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from encoder.contract import EncoderContract
from encoder.files import write_json_atomic

ARTIFACT_FILE = "artifact.json"
PRECISIONS = ("fp32", "int8")


@dataclass
class ArtifactInfo:
    contract: EncoderContract
    base_model: str
    files: dict[str, dict]  # precision -> {"path": ..., "sha256": ...}
    tokenizer: str = "tokenizer.json"
    training: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": "babelsearch-encoder/1",
            "contract": self.contract.to_dict(),
            "base_model": self.base_model,
            "tokenizer": self.tokenizer,
            "files": self.files,
            "training": self.training,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ArtifactInfo":
        return cls(
            contract=EncoderContract.from_dict(data["contract"]),
            base_model=data["base_model"],
            files=data["files"],
            tokenizer=data.get("tokenizer", "tokenizer.json"),
            training=data.get("training"),
            extra=data.get("extra", {}),
        )

    def quantization(self, precision: str) -> str | None:
        """How the ``precision`` file was quantized: "static", "dynamic" or None (fp32). Artifacts from before
        static int8 do not say: their int8 file is dynamic."""
        if precision == "fp32":
            return None
        return self.files[precision].get("quantization", "dynamic")

    def fingerprint(self, precision: str) -> str:
        """Identifies the vectors this artifact produces at one precision (indexes and caches bind to it):
        the ONNX file and the contract (prefixes, pooling, max length change vectors without changing it)."""
        contract = json.dumps(self.contract.to_dict(), sort_keys=True)
        digest = hashlib.sha256(f"{self.files[precision]['sha256']}\0{contract}".encode()).hexdigest()
        return f"{digest[:16]}-{precision}"

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ARTIFACT_FILE
        write_json_atomic(path, self.to_dict())
        return path


def load_artifact_info(directory: str | Path) -> ArtifactInfo:
    path = Path(directory) / ARTIFACT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a model artifact: {path} is missing (build one with `python -m trainer.export`)")
    return ArtifactInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def keep_precisions(directory: str | Path, keep: list[str]) -> ArtifactInfo:
    """Delete the ONNX files of every precision not in ``keep`` and drop them from ``artifact.json``, after
    checking each kept file against its recorded sha256. The kept precisions' fingerprints do not change
    (each is computed from its own file and the contract), so indexes built with them still open."""
    directory = Path(directory)
    info = load_artifact_info(directory)
    unknown = sorted(set(keep) - set(info.files))
    if unknown or not keep:
        raise ValueError(f"{directory} has precisions {sorted(info.files)}; cannot keep {unknown or keep}")
    for precision in keep:
        entry = info.files[precision]
        if sha256_file(directory / entry["path"]) != entry["sha256"]:
            raise ValueError(f"{directory / entry['path']} does not match the sha256 in {ARTIFACT_FILE}")
    dropped = [info.files.pop(precision)["path"] for precision in sorted(set(info.files) - set(keep))]
    info.save(directory)  # first: an interrupted run leaves extra files, never a listed file missing
    for path in dropped:
        (directory / path).unlink(missing_ok=True)
    return info

