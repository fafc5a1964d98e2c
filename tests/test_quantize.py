"""Static int8 (trainer.quantize, issue 16): a text's vector does not depend on its batch, the runtime batches
it, a shipped recipe rebuilds the same model without the calibration data, and artifacts without a recipe
keep the dynamic model, encoded one text per call."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from encoder import OnnxEncoder, load_artifact_info
from tests.multilingual_sample import SENTENCES
from trainer.data import NTREX_LANGUAGES
from trainer.quantize import QUANTIZATION_FILE, _gather_then_dequantize, load_recipe


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    """An NTREX-128-shaped directory (three languages, 40 lines each) from the multilingual sample."""
    directory = tmp_path_factory.mktemp("ntrex")
    for i, code in enumerate(list(NTREX_LANGUAGES)[:3]):
        lines = [f"{SENTENCES[(i * 7 + j) % len(SENTENCES)]} ({j})" for j in range(40)]
        (directory / f"newstest2019-ref.{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def static_artifact(tmp_path_factory, calibration_dir):
    from trainer.export import export_artifact
    from trainer.modeling import tiny_encoder

    return export_artifact(tiny_encoder(seed=0), tmp_path_factory.mktemp("static") / "artifact",
                           int8_data=calibration_dir)


def test_static_int8_is_recorded_and_batched(static_artifact):
    info = load_artifact_info(static_artifact)
    assert info.quantization("int8") == "static" and info.quantization("fp32") is None
    assert (static_artifact / QUANTIZATION_FILE).is_file()
    encoder = OnnxEncoder(static_artifact, "int8", batch_size=64)
    assert encoder.batch_independent
    ops = {node.op_type for node in onnx.load(str(static_artifact / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_a_static_int8_vector_does_not_depend_on_its_batch(static_artifact):
    texts = [f"{sentence} {'and more words ' * (i % 5)}" for i, sentence in enumerate(SENTENCES * 2)][:64]
    encoder = OnnxEncoder(static_artifact, "int8")
    alone = np.concatenate([encoder.encode([text], "passage") for text in texts])
    together = encoder.encode(texts, "passage", batch_size=64)
    assert np.abs(alone - together).max() <= 1e-6
    fp32 = OnnxEncoder(static_artifact, "fp32").encode(texts, "passage")
    assert np.sum(together * fp32, axis=1).mean() > 0.95  # a random tiny model, still close to its fp32


def test_a_shipped_recipe_rebuilds_the_same_int8_model_without_data(static_artifact, tmp_path):
    from trainer.export import export_artifact
    from trainer.modeling import tiny_encoder

    recipe = load_recipe(static_artifact / QUANTIZATION_FILE)
    assert recipe.alpha > 0 and recipe.tensor_ranges and "texts" in recipe.sample
    rebuilt = export_artifact(tiny_encoder(seed=0), tmp_path / "rebuilt", int8_recipe=static_artifact / QUANTIZATION_FILE)
    assert load_artifact_info(rebuilt).files["int8"]["sha256"] == load_artifact_info(static_artifact).files["int8"]["sha256"]


def test_without_calibration_data_int8_is_dynamic_and_encoded_one_text_per_call(tiny_artifact):
    info = load_artifact_info(tiny_artifact)  # conftest exports it with no calibration data
    assert info.quantization("int8") == "dynamic" and not (tiny_artifact / QUANTIZATION_FILE).exists()
    encoder = OnnxEncoder(tiny_artifact, "int8")
    assert not encoder.batch_independent
    calls = []
    run = encoder._run
    encoder._run = lambda batch: calls.append(len(batch)) or run(batch)
    encoder.encode(SENTENCES[:5], "passage")
    assert calls == [1] * 5


def test_an_artifact_from_before_static_int8_reads_as_dynamic(tiny_artifact, tmp_path):
    import shutil

    old = shutil.copytree(tiny_artifact, tmp_path / "old")
    data = json.loads((old / "artifact.json").read_text(encoding="utf-8"))
    del data["files"]["int8"]["quantization"]
    (old / "artifact.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_artifact_info(old).quantization("int8") == "dynamic"
    assert not OnnxEncoder(old, "int8").batch_independent


def test_gather_then_dequantize_gives_the_same_rows(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.integers(-127, 128, size=(50, 6), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["table", "scale", "zero"], ["table_dq"], name="dq"),
         helper.make_node("Gather", ["table_dq", "ids"], ["rows"], name="lookup", axis=0)],
        "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, None, 6])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array(0.013, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.int8), "zero")])
    path = tmp_path / "lookup.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ids = rng.integers(0, 50, size=(3, 7)).astype(np.int64)
    before = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
    _gather_then_dequantize(path)
    nodes = onnx.load(str(path)).graph.node
    assert [node.op_type for node in nodes] == ["Gather", "DequantizeLinear"]
    assert np.array_equal(ort.InferenceSession(str(path)).run(None, {"ids": ids})[0], before)


def test_runtime_batches_stop_at_the_token_budget(static_artifact):
    encoder = OnnxEncoder(static_artifact, "int8", batch_size=4, max_batch_tokens=100)
    # sorted lengths; a batch pads to its last text: 4 x 10, then 3 x 30 (a fourth would pad 4 x 30 > 100)
    assert encoder._batches([10, 10, 10, 10, 30, 30, 30, 30, 200], 4) == [(0, 4), (4, 7), (7, 8), (8, 9)]
    texts = [sentence * (1 + i % 4) for i, sentence in enumerate(SENTENCES)]
    budgeted = encoder.encode(texts, "passage")
    assert np.abs(budgeted - OnnxEncoder(static_artifact, "int8").encode(texts, "passage")).max() <= 1e-6
