"""Training loop on the tiny model: loss, config, exact resume, Ctrl-C, refusal to overwrite, CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.trainer_fixtures import write_parallel_jsonl
from trainer.config import TrainConfig, config_differences, config_from_dict, load_config
from trainer.loss import info_nce
from trainer.train import CHECKPOINT_FILE, LOG_FILE, train

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    data = tmp_path / "parallel.jsonl"
    if not data.is_file():
        write_parallel_jsonl(data, groups=40, hard_negatives=True)
    return config_from_dict({
        "base": "tiny-random", "datasets": [{"format": "jsonl", "path": str(data)}],
        "output_dir": str(tmp_path / "run"), "steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 1e-3,
        "hard_negatives": 1, "checkpoint_every": 2, "export": False, "threads": 1, **overrides,
    })


def checkpoint(path: Path) -> dict:
    return torch.load(Path(path) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


# -------------------------------------------------------------------------------------- loss


def test_info_nce_matches_a_direct_computation():
    torch.manual_seed(0)
    q, p = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    positives = torch.arange(4)
    expected = -torch.log_softmax(q @ p.T / 0.05, dim=1)[torch.arange(4), positives].mean()
    assert torch.allclose(info_nce(q, p, positives, 0.05), expected)
    reverse = -torch.log_softmax(p[:4] @ q.T / 0.05, dim=1).diagonal().mean()
    assert torch.allclose(info_nce(q, p, positives, 0.05, symmetric=True), (expected + reverse) / 2)


def test_info_nce_masks_copies_of_the_positive():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    p = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.1]]), dim=-1)  # candidate 2 = copy of 0
    ids = torch.tensor([0, 1, 0])
    masked = info_nce(q, p, torch.arange(2), 0.05, passage_ids=ids)
    assert torch.allclose(masked, info_nce(q, p[:2], torch.arange(2), 0.05))
    assert info_nce(q, p, torch.arange(2), 0.05) > masked
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, p, torch.arange(2), 0.0)


# ------------------------------------------------------------------------------------ config


def test_yaml_config_with_cli_overrides(tmp_path):
    import argparse

    from trainer.config import add_override_flags

    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  - {format: jsonl, path: x.jsonl}\nalpha: 0.5\ndev: {path: xq, every: 10}\n")
    parser = argparse.ArgumentParser()
    add_override_flags(parser)
    config = load_config(path, parser.parse_args(["--alpha", "1", "--steps", "20", "--dropout", "null",
                                                  "--symmetric", "true", "--dev-every", "5", "--lr", "5e-5"]))
    assert (config.alpha, config.steps, config.symmetric, config.dev.every, config.dev.path) == (1.0, 20, True, 5, "xq")
    assert config.lr == 5e-5 and config.dropout is None
    assert load_config(path, parser.parse_args(["--no-dev"])).dev is None
    with pytest.raises(ValueError, match="expected an integer"):
        load_config(path, parser.parse_args(["--steps", "many"]))
    with pytest.raises(ValueError, match="alpha must be in"):
        load_config(path, parser.parse_args(["--alpha", "2"]))


def test_config_rejects_unknown_keys_and_bad_datasets():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['alhpa'\]"):
        config_from_dict({"datasets": [{"format": "jsonl", "path": "x"}], "alhpa": 0.5})
    with pytest.raises(ValueError, match="format must be one of"):
        config_from_dict({"datasets": [{"format": "csv", "path": "x"}]})
    with pytest.raises(ValueError, match="at least one dataset"):
        config_from_dict({"datasets": []})


def test_config_differences_ignore_run_control_fields(tmp_path):
    a = tiny_config(tmp_path).to_dict()
    b = tiny_config(tmp_path, output_dir="elsewhere", checkpoint_every=5, lr=2e-3).to_dict()
    assert config_differences(a, b) == ["lr: 0.001 -> 0.002"]


def test_shipped_configs_load():
    for name in ("xx_mono", "xy", "hybrid"):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        assert config.alpha == {"xx_mono": 1.0, "xy": 0.0, "hybrid": 0.5}[name]
        assert config.output_dir.endswith(name)
    budgets = [{k: v for k, v in load_config(ROOT / "configs" / f"{n}.yaml").to_dict().items()
                if k not in ("alpha", "output_dir")} for n in ("xx_mono", "xy", "hybrid")]
    assert budgets[0] == budgets[1] == budgets[2]  # the comparison differs in alpha only


def test_the_zero_shot_comparison_differs_in_alpha_only():
    budgets = [{k: v for k, v in load_config(ROOT / "configs" / "zeroshot" / f"{n}.yaml").to_dict().items()
                if k not in ("alpha", "output_dir")} for n in ("xx_mono", "xy", "hybrid")]
    assert budgets[0] == budgets[1] == budgets[2]


def test_every_shipped_config_loads_and_the_zero_shot_ones_never_see_xquad_r():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        config = load_config(path)
        if "zeroshot" in path.parts or path.stem == "recommended" or "ablations" in path.parts:
            assert config.dev is None and not any("xquad" in d.path for d in config.datasets), path
    recommended = load_config(ROOT / "configs" / "recommended.yaml")
    assert recommended.lora is not None and recommended.distill is None
    gpu = load_config(ROOT / "configs" / "gpu" / "recommended.yaml")
    assert (gpu.device, gpu.precision, gpu.lora) == ("cuda", "bf16", recommended.lora)


# -------------------------------------------------------------------------------- training


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(tiny_config(tmp_path, output_dir=str(tmp_path / "whole")))
    assert whole.stopped == "completed" and whole.step == 6

    config = tiny_config(tmp_path, output_dir=str(tmp_path / "halves"))
    first = train(config, stop_at=3)
    assert first.stopped == "stop_at" and checkpoint(tmp_path / "halves")["step"] == 3
    second = train(config, resume=True)
    assert second.stopped == "completed" and second.step == 6

    a, b = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "halves")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=1e-6, msg=name)
    assert a["sampler"] == b["sampler"]
    rows = [json.loads(line) for line in (tmp_path / "halves" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    whole_rows = [json.loads(line) for line in (tmp_path / "whole" / LOG_FILE).read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in whole_rows], abs=1e-5)


def test_frozen_word_embeddings_stay_put_and_are_not_checkpointed(tmp_path):
    from trainer.modeling import tiny_encoder

    train(tiny_config(tmp_path, steps=2))
    state = checkpoint(tmp_path / "run")
    assert "backbone.embeddings.word_embeddings.weight" not in state["model"]
    before = tiny_encoder(seed=0).state_dict()
    changed = [k for k, v in state["model"].items() if not torch.equal(v, before[k])]
    assert any("encoder.layer" in k for k in changed)


def test_refuses_to_overwrite_and_checks_config_on_resume(tmp_path):
    train(tiny_config(tmp_path, steps=2))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, steps=2))
    with pytest.raises(ValueError, match="alpha: 0.5 -> 1.0"):
        train(tiny_config(tmp_path, steps=2, alpha=1.0), resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path, output_dir=str(tmp_path / "none")), resume=True)


def test_batch_must_split_evenly_and_data_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(config_from_dict({"base": "tiny-random", "datasets": [{"format": "jsonl", "path": str(tmp_path / "x")}],
                                "output_dir": str(tmp_path / "r")}))


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    config = tiny_config(tmp_path, steps=100000, checkpoint_every=100000)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "trainer", "train", "--config", str(path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = Path(config.output_dir) / LOG_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    state = checkpoint(config.output_dir)
    assert state["step"] >= 3 and state["step"] == len(log.read_text().splitlines())
    resumed = train(config, resume=True, stop_at=state["step"] + 2)
    assert resumed.step == state["step"] + 2


def test_cli_train_and_export(tmp_path):
    from encoder import OnnxEncoder
    from trainer.__main__ import main

    config = tiny_config(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**config.to_dict(), "export": True, "quantize": False}))
    assert main(["train", "--config", str(path), "--steps", "3", "--warmup-steps", "1"]) == 0
    artifact = Path(config.output_dir) / "artifact"
    info = json.loads((artifact / "artifact.json").read_text())
    assert info["training"]["config"]["steps"] == 3 and info["training"]["steps"] == 3
    assert info["training"]["config"]["alpha"] == 0.5 and info["training"]["stopped"] == "completed"
    vectors = OnnxEncoder(artifact, precision="fp32").encode(["der schnelle fuchs"], "query")
    assert vectors.shape == (1, 32)

    # Re-exporting the run's last weights (no dev split: the same weights) gives the same vectors.
    assert main(["export", config.output_dir, "--weights", "last"]) == 0
    again = Path(config.output_dir) / "artifact-last"
    assert json.loads((again / "artifact.json").read_text())["training"]["exported_weights"] == "last: step 3"
    np.testing.assert_allclose(OnnxEncoder(again, precision="fp32").encode(["der schnelle fuchs"], "query"), vectors,
                               atol=1e-6)
    assert main(["export", config.output_dir, "--weights", "best"]) == 2  # no dev split, so no best.pt


def test_dev_split_evaluation_keeps_best_weights_and_never_trains_on_held_out_articles(tmp_path):
    """Early stopping runs the evaluator's LAReQA code on held-out *train* articles; the export records it."""
    from tests.trainer_fixtures import write_squad_dir

    ids = write_squad_dir(tmp_path / "xq", languages=("en", "de"), articles=6)
    config = config_from_dict({
        "base": "tiny-random", "datasets": [{"format": "squad", "path": str(tmp_path / "xq")}],
        "output_dir": str(tmp_path / "run"), "steps": 4, "batch_size": 4, "warmup_steps": 1, "lr": 1e-3,
        "threads": 1, "checkpoint_every": 2, "export": True, "quantize": False, "trace_batches": True,
        "dev": {"path": str(tmp_path / "xq"), "articles": 1, "every": 2, "patience": None},
    })
    result = train(config)
    assert [row["step"] for row in result.dev_history] == [2, 4]
    assert {"mono_map", "cross_map", "multilingual_map", "rank_distance"} <= set(result.dev_history[0])
    assert result.best["value"] == max(row["multilingual_map"] for row in result.dev_history)
    assert (tmp_path / "run" / "best.pt").is_file()

    dev_articles = json.loads((result.artifact / "artifact.json").read_text())["training"]["dev"]["articles"]
    assert len(dev_articles) == 1 and dev_articles[0] % 2 == 0  # a train-half article (even = train)
    held_out = set(ids[dev_articles[0]])
    test_half = {q for article, qids in ids.items() if article % 2 for q in qids}
    trained = {g for line in (tmp_path / "run" / "trace" / "rank0.jsonl").read_text().splitlines()
               for g in json.loads(line)["groups"]}
    assert trained and not trained & held_out and not trained & test_half


def test_resume_replays_steps_past_the_checkpoint_without_duplicate_rows(tmp_path):
    """A crash after step 4 but before its checkpoint: steps 4.. run again, and the logs hold each step once."""
    config = tiny_config(tmp_path, trace_batches=True)
    train(config, stop_at=3)
    run = Path(config.output_dir)
    for name in (LOG_FILE, "trace/rank0.jsonl"):  # what the crashed process had written after the checkpoint
        with open(run / name, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": 4, "loss": 0.0}) + "\n")
    train(config, resume=True)
    for name in (LOG_FILE, "trace/rank0.jsonl"):
        steps = [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]
        assert steps == [1, 2, 3, 4, 5, 6], name


def test_resume_drops_a_best_file_newer_than_the_checkpoint(tmp_path):
    """best.pt written after the last checkpoint (crash in between) is not the checkpoint's best: it is dropped
    and dev selection restarts, so the exported 'best' weights always match the recorded best step."""
    from tests.trainer_fixtures import write_squad_dir

    write_squad_dir(tmp_path / "xq", languages=("en", "de"), articles=6)
    config = config_from_dict({
        "base": "tiny-random", "datasets": [{"format": "squad", "path": str(tmp_path / "xq")}],
        "output_dir": str(tmp_path / "run"), "steps": 6, "batch_size": 4, "warmup_steps": 1, "lr": 1e-3,
        "threads": 1, "checkpoint_every": 2, "export": False,
        "dev": {"path": str(tmp_path / "xq"), "articles": 1, "every": 2, "patience": None},
    })
    train(config, stop_at=2)
    best, last = tmp_path / "run" / "best.pt", tmp_path / "run" / CHECKPOINT_FILE
    torch.save({**torch.load(best, weights_only=False), "step": 4}, best)  # step 4 improved, then the process died
    state = torch.load(last, weights_only=False)
    state["best"]["value"] = 2.0  # unbeatable: without the fix, nothing would ever replace the stray best.pt
    torch.save(state, last)
    result = train(config, resume=True)
    assert result.step == 6 and result.best is not None
    assert torch.load(best, weights_only=False)["step"] == result.best["step"] >= 4


# ------------------------------------------------------------------- config errors, objectives, dev


@pytest.mark.parametrize("field, value, message", [
    ("contrastive_weight", -1.0, "contrastive_weight must be >= 0"),
    ("contrastive_weight", 0.0, r"at least one objective weight must be > 0 \(contrastive_weight, distill.weight\)"),
    ("max_length", 4, "max_length must be >= 8"),
    ("query_max_length", 4, "query_max_length must be >= 8"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("threads", 0, "threads must be >= 1 or null"),
    ("dev", {"path": "xq", "batch_size": 0}, "dev.batch_size must be >= 1"),
    ("datasets", [{"format": "ntrex", "path": "x", "sentences_per_passage": 0}],
     r"datasets\[0\].sentences_per_passage must be >= 1"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"datasets": [{"format": "jsonl", "path": "x"}], field: value})


def test_training_data_holding_evaluation_questions_is_a_value_error_naming_the_dataset(tmp_path):
    from tests.trainer_fixtures import write_squad_dir
    from trainer.datasets import load_datasets
    from trainer.dev import load_dev_split

    ids = write_squad_dir(tmp_path / "xq", languages=("en", "de"), articles=6)
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text(json.dumps({"group": ids[1][0], "language": "en", "question": "q?", "passage": "p."}) + "\n")
    config = config_from_dict({
        "datasets": [{"format": "squad", "path": str(tmp_path / "xq")},
                     {"format": "jsonl", "path": str(leaked), "name": "leaky"}],
        "dev": {"path": str(tmp_path / "xq"), "articles": 1},
    })
    with pytest.raises(ValueError, match=r"datasets\[1\] \(leaky\): 1 test-half questions"):
        load_datasets(config, load_dev_split(config))


class _Constant:
    def __init__(self, name: str, value: float, global_batch: bool) -> None:
        self.name, self.value, self.global_batch = name, torch.tensor(value, requires_grad=True), global_batch

    def loss(self, step) -> torch.Tensor:
        return self.value * 1.0


def test_weighted_loss_sums_the_weighted_terms_and_scales_global_batch_ones():
    from trainer.distributed import DistContext
    from trainer.objectives import StepInputs, weighted_loss

    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    step = StepInputs(batch=None, model=None, encoder=None, ctx=ctx)  # type: ignore[arg-type]
    a, b = _Constant("a", 2.0, global_batch=True), _Constant("b", 3.0, global_batch=False)
    scaled, total, terms = weighted_loss([(a, 1.0), (b, 0.5)], step)
    assert terms == {"a": 2.0, "b": 3.0}
    assert float(total.detach()) == 2.0 + 0.5 * 3.0
    scaled.backward()  # the global-batch term times world_size (DDP averages), the per-rank one as is
    assert float(a.value.grad) == 2.0 and float(b.value.grad) == 0.5
    with pytest.raises(ValueError, match="no objective"):
        weighted_loss([], step)


def test_build_objectives_takes_the_weight_from_the_config(tmp_path):
    from trainer.objectives import ContrastiveObjective, build_objectives

    objectives = build_objectives(tiny_config(tmp_path, contrastive_weight=0.25))
    assert [(type(o), w) for o, w in objectives] == [(ContrastiveObjective, 0.25)]


def test_an_added_objective_is_logged_and_its_state_checkpointed_per_rank(tmp_path, monkeypatch):
    import trainer.train as train_module

    class Counting:
        """A per-rank objective with state of its own: its loss is zero, its call count is checkpointed."""

        name, global_batch = "count", False

        def __init__(self) -> None:
            self.calls = 0

        def loss(self, step) -> torch.Tensor:
            self.calls += 1
            return 0.0 * step.embed(["x"], "query", 8).sum()

        def state_dict(self) -> dict:
            return {"calls": self.calls}

        def load_state_dict(self, state: dict) -> None:
            self.calls = state["calls"]

    built, original = [], train_module.build_objectives

    def build(config, *args):
        built.append(Counting())
        return original(config, *args) + [(built[-1], 2.0)]

    monkeypatch.setattr(train_module, "build_objectives", build)
    config = tiny_config(tmp_path)
    train(config, stop_at=3)
    assert checkpoint(config.output_dir)["objectives"] == [{"count": {"calls": 3}}]
    train(config, resume=True)
    assert built[-1].calls == 6 and checkpoint(config.output_dir)["objectives"] == [{"count": {"calls": 6}}]
    rows = [json.loads(line) for line in (Path(config.output_dir) / LOG_FILE).read_text().splitlines()]
    assert all(r["loss_count"] == 0.0 and r["loss"] == r["loss_contrastive"] for r in rows)


def test_a_checkpoint_from_before_a_config_field_existed_still_resumes(tmp_path):
    """Fields added to the config later (contrastive_weight) count as their defaults in an older checkpoint."""
    config = tiny_config(tmp_path)
    train(config, stop_at=2)
    path = Path(config.output_dir) / CHECKPOINT_FILE
    state = torch.load(path, weights_only=False)
    del state["config"]["contrastive_weight"]
    torch.save(state, path)
    assert train(config, resume=True).step == 6
    with pytest.raises(ValueError, match="contrastive_weight: 1.0 -> 0.5"):
        train(tiny_config(tmp_path, contrastive_weight=0.5), resume=True)


def test_dev_tracker_keeps_the_best_and_counts_patience():
    from trainer.config import DevConfig
    from trainer.dev import DevTracker

    tracker = DevTracker(DevConfig(path="xq", every=2, patience=2), split=None)
    values = iter([0.5, 0.7, 0.6, 0.65])
    tracker.metrics = lambda encoder: {"multilingual_map": next(values)}  # type: ignore[method-assign]
    saved = []
    assert tracker.due(2, 9) and not tracker.due(3, 9) and tracker.due(9, 9)
    for step in (2, 4, 6, 8):
        tracker.evaluate(None, step, saved.append)  # type: ignore[arg-type]
    assert tracker.best["step"] == 4 and tracker.best["value"] == 0.7 and len(saved) == 2
    assert tracker.evals_since_best == 2 and tracker.exhausted
    restored = DevTracker(DevConfig(path="xq"), split=None)
    restored.load_state_dict(tracker.state_dict())
    assert (restored.history, restored.best, restored.evals_since_best) == (tracker.history, tracker.best, 2)
    assert not DevTracker(None, None).due(2, 2) and not DevTracker(None, None).exhausted
    wrong = DevTracker(DevConfig(path="xq", metric="nope"), split=None)
    wrong.metrics = lambda encoder: {"multilingual_map": 0.5}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="dev.metric 'nope' is not among"):
        wrong.evaluate(None, 2, saved.append)  # type: ignore[arg-type]
