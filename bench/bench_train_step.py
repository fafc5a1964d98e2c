"""Seconds per training step of the recipes compared in the README, on the same batches, in one run.

    python bench/bench_train_step.py [--steps 6] [--threads 2]

Recipes: full fine-tuning (configs/zeroshot/hybrid.yaml), LoRA (configs/recommended.yaml) and LoRA plus the
distillation objective (configs/ablations/lora-hybrid-distill.yaml). Each runs `--steps` steps from the base
model (the first is a warm-up and is not counted) in a scratch directory; prints a Markdown table with the
median and the mean, and the steps each could make in the time full fine-tuning takes for 120 steps.
Run it on an otherwise idle machine: the training logs' own timings are distorted by whatever else runs.
"""
from __future__ import annotations

import argparse
import statistics
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
}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = {name: step_seconds(path, args.steps, args.threads) for name, path in RECIPES.items()}
    reference = statistics.median(rows["full fine-tuning"])
    print(f"\n{args.steps - 1} timed steps each (batch 32, {args.threads} threads), same sampler seed\n")
    print("| recipe | median s/step | mean s/step | steps in the time of 120 full fine-tuning steps |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows.items():
        median = statistics.median(seconds)
        print(f"| {name} | {median:.2f} | {statistics.mean(seconds):.2f} | {120 * reference / median:.0f} |")


if __name__ == "__main__":
    main()
