"""Torch-free encoder layer: the encoder contract, the model artifact and the ONNX Runtime encoder."""
from encoder.artifact import ArtifactInfo, load_artifact_info
from encoder.contract import EncoderContract, TextKind
from encoder.protocol import TextEncoder
from encoder.runtime import EncoderArtifact, OnnxEncoder

__all__ = ["ArtifactInfo", "EncoderArtifact", "EncoderContract", "OnnxEncoder", "TextEncoder", "TextKind", "load_artifact_info"]
