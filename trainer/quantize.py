"""The int8 model: static (QDQ) quantization with SmoothQuant, so a text's vector never depends on its batch.

Dynamic quantization (ONNX Runtime's ``quantize_dynamic``) derives each activation's scale from the whole
input tensor, so a batched text's vector depends on its neighbours and the service had to encode one text
per call. Static quantization fixes every scale once, from a calibration sample; the runtime then batches
int8 like fp32 (batch 1 and batch 64 agree to ~1e-7).

Static scales must cover the largest activation seen, and BERT's feed-forward inputs carry a few channels
with values 10-70x the rest (per-tensor uint8 then rounds everything else to a handful of levels: cosine
to fp32 0.979 on e5-small). SmoothQuant (Xiao et al. 2023, arXiv 2211.10438) moves that range into the
weights: for a linear layer y = x W^T, with s_c = amax(x_c)^alpha / amax(W_:,c)^(1-alpha) per input channel,
y = (x / s) (W s)^T exactly in real numbers, and x / s has a flat range. BERT is post-LayerNorm (the
LayerNorm output also feeds the residual), so 1/s cannot be folded into the LayerNorm: it is an explicit
per-channel multiply before the smoothed layers (attention output, both feed-forward layers), which costs
an elementwise pass. Measured on the served model (2 threads, XQuAD-R sentences): cosine to fp32 0.979
unsmoothed, 0.993 with alpha 0.7 (docs/performance.md has the sweep and the mAP).

What ships: ``quantization.json`` holds the recipe and everything the sample determined (per-channel
activation maxima of each smoothed layer and ONNX Runtime's tensor ranges), so a build without the
calibration data (the Docker image, from an adapter that carries the file) writes the same int8 model.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from encoder.files import write_json_atomic

QUANTIZATION_FILE = "quantization.json"
FORMAT = "babelsearch-int8/1"
DEFAULT_ALPHA = 0.7  # 0.5: cosine to fp32 0.978, 0.7: 0.993, 0.8: 0.992, 0.9: 0.991 (the served model)
# Per language: single sentences encoded as queries and as passages, and paragraphs of consecutive
# sentences (the same article) so that long passages are inside the calibrated ranges too.
SAMPLE_QUERIES, SAMPLE_PASSAGES, SAMPLE_PARAGRAPHS, PARAGRAPH_SENTENCES = 12, 12, 4, 6
CALIBRATION_BATCH = 8
VOCABULARY_TABLE = 1_000_000  # a Gather over an initializer this large is the vocabulary: int8, per tensor


@dataclass
class Int8Recipe:
    """Everything that decides the int8 model besides the fp32 weights."""

    alpha: float
    sample: str  # what the calibration sample was
    activation_max: dict[str, np.ndarray]  # smoothed layer -> per-input-channel max |x| on the sample
    tensor_ranges: dict  # ONNX Runtime's calibration cache (TensorsData.to_dict) of the smoothed graph

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "method": "static QDQ, SmoothQuant", "alpha": self.alpha, "sample": self.sample,
            "activation_max": {name: _pack(values) for name, values in self.activation_max.items()},
            "tensor_ranges": self.tensor_ranges,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Int8Recipe":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} quantization recipe (format {data.get('format')!r})")
        return cls(float(data["alpha"]), data["sample"],
                   {name: _unpack(value) for name, value in data["activation_max"].items()}, data["tensor_ranges"])

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / QUANTIZATION_FILE
        write_json_atomic(path, self.to_dict())
        return path


def load_recipe(path: str | Path) -> Int8Recipe:
    return Int8Recipe.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()


# --- the calibration sample ---------------------------------------------------------------------------

def calibration_sample(ntrex_dir: str | Path, seed: int = 0) -> tuple[list[str], str]:
    """Prefixed texts in every NTREX-128 language (queries, passages and paragraph-length passages), and
    a description of them. Fixed by ``seed``, so the same data gives the same int8 model."""
    from trainer.calibration import ntrex_texts

    rng = random.Random(seed)
    texts = []
    for language, lines in sorted(ntrex_texts(ntrex_dir, sentences=10**9).items()):
        picked = rng.sample(lines, min(len(lines), SAMPLE_QUERIES + SAMPLE_PASSAGES))
        texts += ["query: " + line for line in picked[:SAMPLE_QUERIES]]
        texts += ["passage: " + line for line in picked[SAMPLE_QUERIES:]]
        for start in rng.sample(range(max(1, len(lines) - PARAGRAPH_SENTENCES)), SAMPLE_PARAGRAPHS):
            texts.append("passage: " + " ".join(lines[start : start + PARAGRAPH_SENTENCES]))
    description = (f"NTREX-128, seed {seed}: per language {SAMPLE_QUERIES} sentences as queries, "
                   f"{SAMPLE_PASSAGES} as passages, {SAMPLE_PARAGRAPHS} paragraphs of {PARAGRAPH_SENTENCES} "
                   f"consecutive sentences; {len(texts)} texts")
    return texts, description


def _batches(encoder: Any, texts: Sequence[str]):
    """Token batches of already-prefixed ``texts`` (the contract's truncation), as numpy feeds."""
    tokenizer = encoder.tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=encoder.contract.max_length)
    ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
    for start in range(0, len(ids), CALIBRATION_BATCH):
        batch = ids[start : start + CALIBRATION_BATCH]
        width = max(map(len, batch))
        input_ids = np.full((len(batch), width), encoder.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, row_ids in enumerate(batch):
            input_ids[row, : len(row_ids)], mask[row, : len(row_ids)] = row_ids, 1
        yield {"input_ids": input_ids, "attention_mask": mask}


# --- SmoothQuant on the torch model --------------------------------------------------------------------

class Smoothed(nn.Module):
    """``linear(x / s)`` with ``s`` already multiplied into the linear's weight columns."""

    def __init__(self, linear: nn.Linear, inverse_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("inverse_scale", inverse_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse_scale)


def smoothed_layers(encoder: Any) -> dict[str, tuple[nn.Module, str]]:
    """name -> (parent module, attribute) of the linears that get smoothed, for BERT-family encoders
    (BertModel, XLMRobertaModel): each layer's attention output and both feed-forward layers."""
    layers = getattr(getattr(encoder.backbone, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"static int8 needs a BERT-family encoder (encoder.layer[i]); got "
                         f"{type(encoder.backbone).__name__}")
    out = {}
    for i, layer in enumerate(layers):
        out[f"layer.{i}.attention.output.dense"] = (layer.attention.output, "dense")
        out[f"layer.{i}.intermediate.dense"] = (layer.intermediate, "dense")
        out[f"layer.{i}.output.dense"] = (layer.output, "dense")
    return out


@torch.no_grad()
def activation_maxima(encoder: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Per input channel, the largest |x| each smoothed linear sees on ``texts`` (padding excluded)."""
    maxima: dict[str, torch.Tensor] = {}
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module, inputs, output):
            x = inputs[0].abs() * mask_holder["mask"][..., None]  # padded positions do not count
            current = x.reshape(-1, x.shape[-1]).amax(0)
            maxima[name] = torch.maximum(maxima[name], current) if name in maxima else current
        return record

    handles = [getattr(parent, attribute).register_forward_hook(hook(name))
               for name, (parent, attribute) in smoothed_layers(encoder).items()]
    was_training = encoder.training
    encoder.eval()
    try:
        for feeds in _batches(encoder, texts):
            mask = torch.from_numpy(feeds["attention_mask"])
            mask_holder["mask"] = mask.to(torch.float32)
            encoder(torch.from_numpy(feeds["input_ids"]), mask)
    finally:
        for handle in handles:
            handle.remove()
        encoder.train(was_training)
    return {name: values.float().numpy() for name, values in maxima.items()}


@torch.no_grad()
def smooth(encoder: Any, activation_max: dict[str, np.ndarray], alpha: float) -> Any:
    """A copy of ``encoder`` with every smoothed linear rescaled (same function in real arithmetic)."""
    import copy

    smoothed = copy.deepcopy(encoder).eval()
    layers = smoothed_layers(smoothed)
    if set(layers) != set(activation_max):
        raise ValueError("the quantization recipe was made for another architecture "
                         f"({len(activation_max)} smoothed layers, this model has {len(layers)})")
    for name, (parent, attribute) in layers.items():
        linear = getattr(parent, attribute)
        x_max = torch.from_numpy(activation_max[name]).clamp(min=1e-5)
        w_max = linear.weight.abs().amax(0).float().clamp(min=1e-5)
        scale = (x_max**alpha / w_max ** (1 - alpha)).clamp(min=1e-5)
        linear.weight.mul_(scale[None, :].to(linear.weight.dtype))
        setattr(parent, attribute, Smoothed(linear, (1.0 / scale).to(linear.weight.dtype)))
    return smoothed


# --- ONNX Runtime static quantization ----------------------------------------------------------------

def _quantized_nodes(model_path: Path) -> list[str]:
    """The MatMuls with a weight operand (the linear layers) and the vocabulary lookup. The attention
    products multiply two activations and stay fp32, as do the softmax, GELU and LayerNorm."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if (node.op_type == "MatMul" and any(name in sizes for name in node.input))
            or (node.op_type == "Gather" and sizes.get(node.input[0], 0) >= VOCABULARY_TABLE)]


def _gather_then_dequantize(path: Path) -> None:
    """Rewrite ``DequantizeLinear(table) -> Gather(ids)`` as ``Gather(ids) -> DequantizeLinear``: ONNX
    Runtime does not fold a dequantized initializer, so the first form dequantizes the whole 250k x 384
    vocabulary on every call (3x slower end to end); the second dequantizes the looked-up rows only. Exact
    for a per-tensor scale, which is what the quantizer gives a Gather."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes, dropped = [], set()
    for node in model.graph.node:
        dequantize = producers.get(node.input[0]) if node.op_type == "Gather" else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or uses[node.input[0]] != 1:
            nodes.append(node)
            continue
        if any(attribute.name == "axis" and attribute.i != 0 for attribute in node.attribute) or \
                shapes.get(dequantize.input[1]) != ():
            raise ValueError(f"{node.name}: expected a row lookup (axis 0) in a table with one scale")
        dropped.add(dequantize.name)
        rows = node.output[0] + "_quantized"
        nodes.append(helper.make_node("Gather", [dequantize.input[0], node.input[1]], [rows], name=node.name, axis=0))
        nodes.append(helper.make_node("DequantizeLinear", [rows, *dequantize.input[1:]], [node.output[0]],
                                      name=node.name + "_dequantize"))
    del model.graph.node[:]
    model.graph.node.extend(node for node in nodes if node.name not in dropped)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_int8(encoder: Any, export_onnx, target: Path, texts: Sequence[str] | None = None,
                  sample: str = "", recipe: Int8Recipe | None = None, alpha: float = DEFAULT_ALPHA) -> Int8Recipe:
    """Write the static int8 model of ``encoder`` to ``target`` and return its recipe. Either ``texts`` (a
    calibration sample, prefixed) or a shipped ``recipe`` decides the scales. ``export_onnx(module, path)``
    writes a torch module as the artifact's fp32 graph (``trainer.export``)."""
    from onnxruntime.quantization import CalibrationDataReader

    if recipe is None:
        if not texts:
            raise ValueError("static int8 needs calibration texts or a shipped quantization recipe")
        print(f"int8: SmoothQuant statistics on {len(texts)} calibration texts", file=sys.stderr)
        recipe = Int8Recipe(alpha, sample, activation_maxima(encoder, texts), {})
    smoothed = smooth(encoder, recipe.activation_max, recipe.alpha)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = _batches(encoder, texts or [])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="int8.", dir=target.parent) as scratch:
        graph = Path(scratch) / "smoothed.onnx"
        export_onnx(smoothed, graph)
        cache = Path(scratch) / "tensor_ranges.json"
        if recipe.tensor_ranges:
            cache.write_text(json.dumps(recipe.tensor_ranges), encoding="utf-8")
        else:
            print("int8: calibrating the activation ranges", file=sys.stderr)
        # ONNX Runtime logs "consider pre-processing" to the root logger on every call; it is about shape
        # inference for image models, not this graph, so it is kept out of the build output.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            _quantize_static(graph, target, None if recipe.tensor_ranges else Reader(), cache)
        finally:
            root.setLevel(level)
        _gather_then_dequantize(target)
        if not recipe.tensor_ranges:  # ONNX Runtime's own cache format, kept verbatim for a rebuild
            recipe.tensor_ranges = json.loads(cache.read_text(encoding="utf-8"))
    return recipe


def _quantize_static(graph: Path, target: Path, reader, cache: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(graph), str(target), reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gather"], nodes_to_quantize=_quantized_nodes(graph), per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibration_cache_path=str(cache),
        # Output quantization off: a MatMul's output feeds the bias add and the residual in fp32, and ONNX
        # Runtime then fuses each linear into one MatMulIntegerToFloat. uint8 activations: int8 x int8 runs
        # ~100x slower than uint8 x int8 in ONNX Runtime 1.32 on this CPU (bench_encoder's peak lines).
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                       "OpTypesToExcludeOutputQuantization": ["MatMul", "Gather"]},
    )
