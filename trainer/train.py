"""Hybrid-batch fine-tuning: single process or ``torchrun`` + DistributedDataParallel, resumable.

One step: every rank draws the same global batch (shared sampler seed) and embeds its own slice; each
objective (``trainer.objectives``; today the InfoNCE of the whole global batch) gathers the rows of all
ranks, and the step backpropagates ``weighted sum of the objectives * world_size``: under DDP's gradient
averaging that is exactly the gradient of a single process holding the whole batch.

This module is the loop: ``Trainer`` (steps, JSONL logs, progress bar, Ctrl-C/SIGTERM, dev evaluation,
checkpoints, export at the end) and ``train()``. The rest of a run lives in ``trainer.build`` (encoder,
optimizer, schedule), ``trainer.datasets`` (the configured data), ``trainer.objectives`` / ``trainer.loss``
(what a step minimises), ``trainer.dev`` (dev split, early stopping), ``trainer.checkpoints`` (the output
directory and its files), ``trainer.run_export`` (``python -m trainer export``).
"""
from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from trainer import checkpoints as ckpt
from trainer import distributed as dist_utils
from trainer.build import TINY_BASE, build_encoder, build_optimizer, set_dropout
from trainer.checkpoints import (
    ARTIFACT_DIR, BEST_FILE, CHECKPOINT_FILE, CHECKPOINT_FORMAT, LOG_FILE, frozen_names, load_trainable_state,
)
from trainer.config import TrainConfig
from trainer.datasets import load_datasets
from trainer.dev import DevSplit, DevTracker, TorchEncoderAdapter, load_dev_split
from trainer.distributed import DistContext
from trainer.objectives import StepInputs, build_objectives, weighted_loss
from trainer import run_export
from trainer.run_export import export_run
from trainer.sampler import Batch, HybridBatchSampler

# What this module has always exported (several names now live in the modules above).
__all__ = [
    "ARTIFACT_DIR", "BEST_FILE", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "LOG_FILE", "TINY_BASE", "DevSplit",
    "TorchEncoderAdapter", "TrainResult", "Trainer", "build_encoder", "export_run", "frozen_names",
    "load_datasets", "load_dev_split", "load_trainable_state", "train",
]

log = logging.getLogger("trainer")

REPEAT_SIGNAL_SECONDS = 3.0


@dataclass
class TrainResult:
    step: int
    stopped: str  # completed | early_stopped | stop_at | interrupted
    output_dir: Path
    artifact: Path | None = None
    best: dict | None = None
    dev_history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(self, config: TrainConfig, ctx: DistContext, resume: bool = False) -> None:
        self.config, self.ctx = config, ctx
        self.out = Path(config.output_dir)
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed + ctx.rank)  # dropout differs per rank, like distinct data would

        self.dev_split = load_dev_split(config)
        self.datasets = load_datasets(config, self.dev_split)
        if ctx.is_main:
            for dataset in self.datasets:
                log.info("dataset %s", dataset.summary())
        self.sampler = HybridBatchSampler(self.datasets, config.batch_size, config.alpha, config.seed,
                                          config.hard_negatives)

        self.encoder = build_encoder(config)
        if config.dropout is not None:
            set_dropout(self.encoder, config.dropout)
        self.encoder.to(ctx.device).train()
        self.frozen = frozen_names(self.encoder)
        self.model: nn.Module = self.encoder
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.encoder, device_ids=device_ids)
        self.optimizer, self.scheduler = build_optimizer(self.encoder, config)
        self.objectives = build_objectives(config, self.encoder, ctx, self.out)
        self.dev = DevTracker(config.dev, self.dev_split)
        self.step = 0
        self.train_seconds = 0.0
        self.last_loss: float | None = None
        self._interrupted = 0.0  # monotonic time of the first SIGINT/SIGTERM

        checkpoint = self.out / CHECKPOINT_FILE
        if resume:
            if not checkpoint.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
            self._load_checkpoint(checkpoint)
        elif checkpoint.is_file():
            raise FileExistsError(f"{checkpoint} exists: pass --resume to continue that run, or choose another "
                                  "output_dir")
        dist_utils.barrier()
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.truncate_rows(self.out / LOG_FILE, self.step)
        ckpt.truncate_rows(self._trace_path(), self.step)  # each rank its own

    # ------------------------------------------------------------------------------ state

    def save_checkpoint(self) -> None:
        ckpt.save_checkpoint(self)

    def _load_checkpoint(self, path: Path) -> None:
        ckpt.load_checkpoint(self, path)

    def _trace_path(self) -> Path:
        return self.out / "trace" / f"rank{self.ctx.rank}.jsonl"

    # ------------------------------------------------------------------------------- step

    def train_step(self, batch: Batch) -> dict[str, Any]:
        """One optimizer step on the global ``batch``: its loss, each objective's term, gradient norm and lr."""
        bf16 = self.config.precision == "bf16" and self.ctx.device.type == "cuda"
        with torch.autocast(device_type=self.ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
            scaled, loss, terms = weighted_loss(self.objectives, StepInputs(batch, self.model, self.encoder, self.ctx))
        scaled.backward()  # global-batch terms times world_size: DDP averages gradients (trainer.objectives)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.encoder.parameters() if p.requires_grad],
                                                   self.config.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach()), "terms": terms, "grad_norm": float(grad_norm), "lr": lr}

    def evaluate_dev(self) -> bool:
        """Evaluate on rank 0, keep the best weights; True when patience is exhausted (on every rank)."""
        state = None
        if self.ctx.is_main:
            def save(metrics: dict) -> None:
                ckpt.save_best(self.out, self.step, ckpt.trainable_state(self.encoder, self.frozen), metrics)

            tqdm.write(self.dev.evaluate(self.encoder, self.step, save))
            state = self.dev.state_dict()
        self.dev.load_state_dict(dist_utils.broadcast_object(state))
        return self.dev.exhausted

    # -------------------------------------------------------------------------------- run

    def _on_signal(self, signum: int, _frame: Any) -> None:
        now = time.monotonic()
        if self._interrupted:
            # torchrun forwards the terminal's Ctrl-C to workers that already got it: only a later one aborts.
            if now - self._interrupted > REPEAT_SIGNAL_SECONDS:
                raise KeyboardInterrupt
            return
        self._interrupted = now
        if self.ctx.is_main:
            tqdm.write(f"{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                       "(press Ctrl-C again to abort without saving)")

    def _log_rows(self, batch: Batch, stats: dict, seconds: float, trace, log_file) -> None:
        if trace is not None:
            local = batch.shard(self.ctx.rank, self.ctx.world_size)
            trace.write(json.dumps({"step": self.step, **batch.describe(), "groups": [p.group for p in local],
                                    "languages": [[p.query_language, p.passage_language] for p in local]}) + "\n")
        if log_file is not None:
            terms = {f"loss_{name}": round(value, 5) for name, value in stats["terms"].items()}
            log_file.write(json.dumps({"step": self.step, "loss": round(stats["loss"], 5), **terms,
                                       "grad_norm": round(stats["grad_norm"], 5), "lr": stats["lr"],
                                       **batch.describe(), "seconds": round(seconds, 3)}) + "\n")
            log_file.flush()

    def run(self, stop_at: int | None = None) -> TrainResult:
        cfg = self.config
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        trace = None
        if cfg.trace_batches:
            self._trace_path().parent.mkdir(parents=True, exist_ok=True)
            trace = open(self._trace_path(), "a", encoding="utf-8")
        log_file = open(self.out / LOG_FILE, "a", encoding="utf-8") if self.ctx.is_main else None
        progress = tqdm(total=cfg.steps, initial=self.step, disable=not self.ctx.is_main, unit="step",
                        dynamic_ncols=True, desc=f"alpha={cfg.alpha}")
        stopped = "completed"
        try:
            while self.step < cfg.steps:
                if stop_at is not None and self.step >= stop_at:
                    stopped = "stop_at"
                    break
                started = time.perf_counter()
                batch = self.sampler.next_batch()
                stats = self.train_step(batch)
                self.step += 1
                seconds = time.perf_counter() - started
                self.train_seconds += seconds
                self.last_loss = stats["loss"]
                self._log_rows(batch, stats, seconds, trace, log_file)
                progress.set_postfix(loss=f"{stats['loss']:.4f}", batch=batch.language or "cross")
                progress.update(1)

                stop_early = self.dev.due(self.step, cfg.steps) and self.evaluate_dev()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stop_early:
                    self.save_checkpoint()
                if stop_early:
                    stopped = "early_stopped"
                    if self.ctx.is_main:
                        tqdm.write(f"early stopping at step {self.step}: no {cfg.dev.metric} gain in "
                                   f"{cfg.dev.patience} evaluations")
                    break
                if dist_utils.any_rank(bool(self._interrupted), self.ctx.device):
                    self.save_checkpoint()
                    stopped = "interrupted"
                    break
            if stopped == "stop_at":
                self.save_checkpoint()
        finally:
            progress.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            for handle in (trace, log_file):
                if handle is not None:
                    handle.close()

        result = TrainResult(self.step, stopped, self.out, best=self.dev.best, dev_history=self.dev.history)
        if stopped in ("completed", "early_stopped") and cfg.export:
            result.artifact = self.export(stopped)
        return result

    def training_record(self, stopped: str) -> dict:
        return run_export.training_record(self, stopped)

    def export(self, stopped: str) -> Path | None:
        """The artifact of the best (else the last) weights, written by rank 0; all ranks must call it."""
        return run_export.export_trained(self, stopped)


def train(config: TrainConfig, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) one training run in this process; under ``torchrun`` each rank calls this."""
    ctx = dist_utils.init_distributed(config.device)
    try:
        return Trainer(config, ctx, resume=resume).run(stop_at=stop_at)
    finally:
        dist_utils.shutdown()
