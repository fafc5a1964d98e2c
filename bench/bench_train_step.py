"""Seconds per training step of the recipes compared in the README, on the same batches, each recipe in a
fresh process.

    python bench/bench_train_step.py [--steps 6] [--threads 2]

Recipes: full fine-tuning (configs/zeroshot/hybrid.yaml), LoRA (configs/recommended.yaml), LoRA plus the
distillation objective (configs/ablations/lora-hybrid-distill.yaml) and LoRA with mined hard negatives
(configs/ablations/lora-hybrid-hardneg.yaml; skipped until its mined files exist). Each runs `--steps` steps
from the base model (the first is a warm-up and is not counted) in a scratch directory; prints a Markdown
table with the median and the mean, and the steps each makes in the time the recommended recipe takes for
its 120 steps (by the means: a run's time is the sum of its steps), the ablations' equal-wall-time budgets.
Run it on an otherwise idle machine: the training logs' own timings are distorted by whatever else runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "full fine-tuning": "configs/zeroshot/hybrid.yaml",
    "LoRA r8 (recommended)": "configs/recommended.yaml",
    "LoRA r8 + distillation": "configs/ablations/lora-hybrid-distill.yaml",
    "LoRA r8 + mined hard negatives": "configs/ablations/lora-hybrid-hardneg.yaml",
}
REFERENCE = "LoRA r8 (recommended)"


def step_seconds(config_path: str, steps: int, threads: int) -> list[float]:
    import torch

    from trainer.config import load_config
    from trainer.distributed import init_distributed, shutdown
    from trainer.train import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        config = load_config(ROOT / config_path)
        config.output_dir, config.threads, config.steps, config.export = scratch, threads, steps, False
        if config.distill is not None:  # fewer teacher vectors to make up front; the step is the same
            config.distill.squad2_fi_questions = 200
        ctx = init_distributed("cpu")
        try:
            trainer = Trainer(config, ctx)
            torch.set_num_threads(threads)
            seconds = []
            for _ in range(steps):
                batch = trainer.sampler.next_batch()
                started = time.perf_counter()
                trainer.train_step(batch)
                seconds.append(time.perf_counter() - started)
        finally:
            shutdown()
    return seconds[1:]


def measure_in_subprocess(config_path: str, steps: int, threads: int) -> list[float]:
    """One recipe in a fresh interpreter: in one process a recipe measured after another ran ~1.5x slower
    (the same LoRA batches: 4.1 s/step in a training run, 6.3 s third in line here)."""
    command = [sys.executable, __file__, "--steps", str(steps), "--threads", str(threads), "--only", config_path]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one config, seconds as JSON
    args = parser.parse_args()
    if args.only:
        print(json.dumps(step_seconds(args.only, args.steps, args.threads)))
        return
    from trainer.config import load_config

    rows = {}
    for name, path in RECIPES.items():
        missing = [d.path for d in load_config(ROOT / path).datasets if not (ROOT / d.path).exists()]
        if missing:
            print(f"skipped {name}: {', '.join(missing)} missing (see {path})", file=sys.stderr)
            continue
        print(f"measuring {name} ...", file=sys.stderr)
        rows[name] = measure_in_subprocess(path, args.steps, args.threads)
    reference = statistics.mean(rows[REFERENCE])
    print(f"\n{args.steps - 1} timed steps each (batch 32, {args.threads} threads), same sampler seed\n")
    print("| recipe | median s/step | mean s/step | steps in the time of 120 recommended steps |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows.items():
        mean = statistics.mean(seconds)
        print(f"| {name} | {statistics.median(seconds):.2f} | {mean:.2f} | {120 * reference / mean:.0f} |")


if __name__ == "__main__":
    main()
