"""The encoder contract: how text becomes a vector. Defined here once.

Training, ONNX export, the runtime encoder, the evaluator and the service all read this object; the
exported artifact records it (``artifact.json`` and the ONNX metadata) so a model can never be served
with prefixes or pooling other than the ones it was trained with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal, Sequence

TextKind = Literal["query", "passage"]
Pooling = Literal["mean", "cls"]


@dataclass(frozen=True)
class EncoderContract:
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    pooling: Pooling = "mean"
    normalize: bool = True
    max_length: int = 512
    dim: int = 384

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")

    def prefix(self, kind: TextKind) -> str:
        if kind == "query":
            return self.query_prefix
        if kind == "passage":
            return self.passage_prefix
        raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")

    def with_prefix(self, texts: Sequence[str], kind: TextKind) -> list[str]:
        prefix = self.prefix(kind)
        return [prefix + text for text in texts]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderContract":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def default_contract_for(model_name: str, dim: int, max_length: int = 512) -> EncoderContract:
    """Sensible contract for a known base model family (the family's own model card conventions)."""
    name = model_name.lower()
    if "e5" in name:  # multilingual-e5-*: "query: " / "passage: ", mean pooling
        return EncoderContract("query: ", "passage: ", "mean", True, max_length, dim)
    if "labse" in name:  # LaBSE: [CLS] pooling, no prefixes
        return EncoderContract("", "", "cls", True, max_length, dim)
    return EncoderContract("", "", "mean", True, max_length, dim)
