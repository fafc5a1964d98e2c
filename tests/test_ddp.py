"""Two CPU processes (torchrun, gloo) on the tiny model: ranks agree on every batch, split its groups, and
end with the weights of a single process that trained on the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import write_parallel_jsonl
from trainer.config import config_from_dict
from trainer.train import CHECKPOINT_FILE, LOG_FILE, train

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_process_ddp_matches_single_process(tmp_path):
    # Hard negatives on every other group, 1-3 each: ranks hold different numbers of them (padded gather).
    data = write_parallel_jsonl(tmp_path / "parallel.jsonl", groups=40, hard_negatives=True)
    settings = {
        "base": "tiny-random", "datasets": [{"format": "jsonl", "path": str(data)}],
        "steps": 5, "batch_size": 8, "warmup_steps": 1, "lr": 1e-3, "hard_negatives": 2, "symmetric": True,
        "dropout": 0.0, "trace_batches": True, "export": False, "threads": 1, "checkpoint_every": 100,
    }
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(json.dumps({**settings, "output_dir": str(tmp_path / "ddp")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "trainer", "train", "--config", str(config_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    single = train(config_from_dict({**settings, "output_dir": str(tmp_path / "single")}))
    assert single.step == 5

    rank0, rank1 = (read_jsonl(tmp_path / "ddp" / "trace" / f"rank{r}.jsonl") for r in (0, 1))
    whole = read_jsonl(tmp_path / "single" / "trace" / "rank0.jsonl")
    assert len(rank0) == len(rank1) == len(whole) == 5
    for a, b, w in zip(rank0, rank1, whole):
        assert (a["kind"], a["dataset"], a["language"]) == (b["kind"], b["dataset"], b["language"])
        assert (a["kind"], a["language"]) == (w["kind"], w["language"])
        assert len(a["groups"]) == len(b["groups"]) == 4 and not set(a["groups"]) & set(b["groups"])
        assert a["groups"] + b["groups"] == w["groups"]
        if a["kind"] == "mono":
            assert {lang for pair in a["languages"] + b["languages"] for lang in pair} == {a["language"]}
        else:
            assert all(q != p for q, p in a["languages"] + b["languages"])

    ddp_log, single_log = read_jsonl(tmp_path / "ddp" / LOG_FILE), read_jsonl(tmp_path / "single" / LOG_FILE)
    for key in ("loss", "grad_norm"):  # Adam hides a wrongly scaled gradient from the weights, not from its norm
        assert [row[key] for row in ddp_log] == pytest.approx([row[key] for row in single_log], rel=1e-4), key

    ddp_state = torch.load(tmp_path / "ddp" / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    single_state = torch.load(tmp_path / "single" / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    assert ddp_state["world_size"] == 2 and len(ddp_state["rng"]) == 2
    for name, value in single_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][name], value, rtol=0, atol=2e-5, msg=name)
