"""LoRA adapters (trainer/lora.py) and the distillation objective (trainer/distill.py) on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer_fixtures import write_parallel_jsonl
from trainer.config import DistillConfig, LoraConfig, config_from_dict
from trainer.distill import TEACHER_FILE, DistillationObjective, ntrex_parallel, teacher_vectors
from trainer.lora import ADAPTER_WEIGHTS, apply_lora, load_adapter, merge, save_adapter
from trainer.modeling import tiny_encoder
from trainer.train import train

SENTENCES = {  # NTREX-128 file codes -> three parallel lines
    "eng-US": ["The water boils.", "A dog runs.", "Rain falls today."],
    "deu": ["Das Wasser kocht.", "Ein Hund rennt.", "Heute fällt Regen."],
    "rus": ["Вода кипит.", "Собака бежит.", ""],  # an empty translation is skipped
}


def write_ntrex(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "DOCUMENT_IDS.tsv").write_text("d1\nd1\nd2\n", encoding="utf-8")
    for code, lines in SENTENCES.items():
        (directory / f"newstest2019-ref.{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def tokens(encoder):
    return encoder.tokenize(["the water boils", "ein Hund rennt heute"], "query")


def test_lora_trains_only_the_adapter_and_merges_to_the_same_function(tmp_path):
    encoder = apply_lora(tiny_encoder(seed=1), LoraConfig(r=4, alpha=8))
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    for name, parameter in encoder.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter do something
            torch.nn.init.normal_(parameter, std=0.1)
    save_adapter(encoder, tmp_path / "adapter", LoraConfig(r=4, alpha=8), {"steps": 1})
    encoder.eval()
    with torch.no_grad():
        wrapped = encoder(**tokens(encoder))
        merged = merge(encoder)(**tokens(encoder))
        reloaded = load_adapter(tiny_encoder(seed=1), tmp_path / "adapter").eval()(**tokens(encoder))
        base = tiny_encoder(seed=1).eval()(**tokens(encoder))
    assert (merged - wrapped).abs().max() < 1e-6
    # Saving rounds the adapter to float16 in memory too, so the file reproduces the model exactly.
    assert (reloaded - merged).abs().max() < 1e-6
    assert (base - merged).abs().max() > 1e-3
    assert json.loads((tmp_path / "adapter" / "training.json").read_text())["steps"] == 1
    assert not (tmp_path / "adapter" / "README.md").exists()


def test_load_adapter_names_a_directory_that_is_not_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter directory"):
        load_adapter(tiny_encoder(), tmp_path)


def test_ntrex_pairs_keep_every_non_empty_translation(tmp_path):
    texts = ntrex_parallel(write_ntrex(tmp_path / "ntrex"))
    assert [t.source for t in texts] == SENTENCES["eng-US"]
    assert dict(texts[0].translations) == {"de": "Das Wasser kocht.", "ru": "Вода кипит."}
    assert dict(texts[2].translations) == {"de": "Heute fällt Regen."}
    assert {t.kind for t in texts} == {"passage"}


def test_teacher_vectors_are_cached_and_refused_for_other_texts(tmp_path):
    encoder = tiny_encoder()
    texts = ntrex_parallel(write_ntrex(tmp_path / "ntrex"))
    first = teacher_vectors(encoder, texts, tmp_path / TEACHER_FILE)
    assert torch.allclose(first, encoder.embed([t.source for t in texts], "passage"), atol=1e-6)
    with torch.no_grad():  # a changed student must not change the cached teacher
        next(encoder.parameters()).add_(1.0)
    assert torch.equal(teacher_vectors(encoder, texts, tmp_path / TEACHER_FILE), first)
    with pytest.raises(ValueError, match="other texts"):
        teacher_vectors(encoder, texts[:2], tmp_path / TEACHER_FILE)


def test_distillation_loss_is_zero_for_the_teacher_and_pulls_translations_together(tmp_path):
    from trainer.distributed import DistContext
    from trainer.objectives import StepInputs

    encoder = tiny_encoder()
    settings = DistillConfig(batch_size=16, ntrex=str(write_ntrex(tmp_path / "ntrex")), max_length=32)
    objective = DistillationObjective(settings, encoder, tmp_path, seed=0, rank=0)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    step = StepInputs(batch=None, model=encoder, encoder=encoder, ctx=ctx)  # type: ignore[arg-type]
    encoder.eval()  # no dropout: the English guard term is then exactly 0
    loss = objective.loss(step).detach()
    sources = encoder.embed(SENTENCES["eng-US"], "passage")
    translations = encoder.embed(["Das Wasser kocht.", "Ein Hund rennt.", "Heute fällt Regen."], "passage")
    gap = ((translations - sources) ** 2).sum(dim=1)
    assert 0 < float(loss) <= float(gap.max()) / 2 + 1e-6  # half the rows are the guard's zeros
    state = objective.state_dict()
    first = objective.draw()
    objective.load_state_dict(state)
    assert objective.draw() == first  # the RNG state is what a checkpoint keeps


def test_a_lora_distillation_run_resumes_and_exports_its_adapter(tmp_path):
    data = write_parallel_jsonl(tmp_path / "parallel.jsonl", groups=40)
    config = config_from_dict({
        "base": "tiny-random", "datasets": [{"format": "jsonl", "path": str(data)}],
        "output_dir": str(tmp_path / "run"), "steps": 4, "batch_size": 8, "warmup_steps": 1, "lr": 1e-2,
        "checkpoint_every": 2, "threads": 1, "quantize": False,
        "lora": {"r": 4, "alpha": 8},
        "distill": {"weight": 2.0, "batch_size": 6, "ntrex": str(write_ntrex(tmp_path / "ntrex")), "max_length": 32},
    })
    assert train(config, stop_at=2).stopped == "stop_at"
    result = train(config, resume=True)
    assert (result.stopped, result.step) == ("completed", 4)
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row["loss"] == pytest.approx(row["loss_contrastive"] + 2.0 * row["loss_distill"], abs=1e-4)
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / ADAPTER_WEIGHTS).is_file()
    record = json.loads((result.artifact / "artifact.json").read_text())["training"]
    assert "LoRA" in record["method"] and "distillation" in record["method"]

    # The exported ONNX model is the base with the saved adapter merged.
    from encoder.runtime import OnnxEncoder

    merged = load_adapter(tiny_encoder(seed=0), adapter).eval()
    onnx = OnnxEncoder(result.artifact, precision="fp32")
    texts = ["the water boils", "Der Hund rennt"]
    expected = merged.embed(texts, "passage").numpy()
    assert np.abs(onnx.encode(texts, "passage") - expected).max() < 1e-5


def test_a_missing_parallel_text_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="distill.ntrex: .*nowhere does not exist"):
        DistillationObjective(DistillConfig(ntrex=str(tmp_path / "nowhere")), tiny_encoder(), tmp_path, 0, 0)
