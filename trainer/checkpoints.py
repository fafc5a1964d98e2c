"""A run's files on disk: the resumable checkpoint, the dev-best weights and the per-step JSONL logs.

Output directory layout::

    checkpoint.pt        last checkpoint: model (trainable part), optimizer, scheduler, sampler RNG, per-rank
                         torch RNG, step, dev history, per-rank state of objectives that have one
                         (``objectives``, only then); written atomically
    best.pt              weights with the best dev metric so far (when a dev split is configured)
    train_log.jsonl      one row per step: loss (and each objective's term), lr, batch kind/language/dataset,
                         seconds
    trace/rank<r>.jsonl  each rank's batches (``trace_batches: true``)
    artifact/            the exported ONNX artifact, its metadata holding the config and the dev metrics

Frozen weights (the word embeddings of e5-small are most of its weights) are left out of both ``.pt`` files:
they come back from the base model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from encoder.files import atomic_path
from trainer import distributed as dist_utils
from trainer.config import config_differences, config_from_dict
from trainer.distributed import DistContext

log = logging.getLogger("trainer")

CHECKPOINT_FILE, BEST_FILE, LOG_FILE, ARTIFACT_DIR = "checkpoint.pt", "best.pt", "train_log.jsonl", "artifact"
CHECKPOINT_FORMAT = "babelsearch-train-checkpoint/1"


def atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------- weights


def frozen_names(encoder: nn.Module) -> set[str]:
    """Weights training leaves alone: checkpoints omit them (they come back from the base model)."""
    return {name for name, parameter in encoder.named_parameters() if not parameter.requires_grad}


def trainable_state(encoder: nn.Module, frozen: set[str]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in encoder.state_dict().items() if k not in frozen}


def load_trainable_state(encoder: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    frozen = frozen_names(encoder)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or set(missing) - frozen:
        raise RuntimeError(f"{source} does not match the model: missing {sorted(set(missing) - frozen)}, "
                           f"unexpected {sorted(unexpected)}")


def save_best(out: Path, step: int, model: dict[str, torch.Tensor], metrics: dict) -> None:
    atomic_save({"step": step, "model": model, "metrics": metrics}, out / BEST_FILE)


def best_file_matches(out: Path, best: dict | None, step: int) -> bool:
    """``best.pt`` must hold the weights the checkpoint calls best. A crash between writing it and the next
    checkpoint (or dev steps that changed on resume) leaves one from a step the run will replay: the
    checkpoint's best weights are then gone. When it does not match it is deleted and False returned (the
    caller restarts dev selection at ``step``)."""
    path = out / BEST_FILE
    saved = load(path)["step"] if path.is_file() else None
    if (best is not None and saved == best["step"]) or (best is None and saved is None):
        return True
    log.warning("%s is from step %s but the checkpoint's best is %s: dev selection restarts at step %d",
                path, saved, best and best["step"], step)
    path.unlink(missing_ok=True)
    return False


def run_weights(run_dir: Path, weights: str) -> tuple[dict, dict, Path]:
    """A finished or interrupted run's ``checkpoint.pt`` and the ``last`` (its own) or ``best`` weights:
    ``(checkpoint, state holding "model" and "step", the file the weights came from)``."""
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    source = run_dir / (CHECKPOINT_FILE if weights == "last" else BEST_FILE)
    if not source.is_file():
        raise FileNotFoundError(f"{run_dir}: no {source.name} (a run's output_dir holds {CHECKPOINT_FILE}"
                                f"{f' and, with a dev split, {BEST_FILE}' if weights == 'best' else ''})")
    checkpoint = load(run_dir / CHECKPOINT_FILE)
    return checkpoint, checkpoint if weights == "last" else load(source), source


# --------------------------------------------------------------------------------- checkpoint


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(states: list[dict], ctx: DistContext) -> None:
    """This rank's torch RNG from the checkpoint (every rank's is saved), when the world size is unchanged."""
    if len(states) == ctx.world_size:
        rng = states[ctx.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], ctx.device)
    elif ctx.is_main:
        log.warning("resuming with %d processes instead of %d: dropout randomness will differ",
                    ctx.world_size, len(states))


def objective_states(objectives: list[tuple[Any, float]]) -> dict[str, Any]:
    """This rank's state of the objectives that have one (``state_dict``), by name."""
    return {o.name: o.state_dict() for o, _ in objectives if hasattr(o, "state_dict")}


def restore_objectives(objectives: list[tuple[Any, float]], states: list[dict] | None, ctx: DistContext) -> None:
    stateful = [o for o, _ in objectives if hasattr(o, "load_state_dict")]
    if not stateful:
        return
    if states is None or len(states) != ctx.world_size:
        if ctx.is_main:
            log.warning("the checkpoint holds no objective state for %d processes: %s start afresh",
                        ctx.world_size, ", ".join(o.name for o in stateful))
        return
    for objective in stateful:
        if objective.name in states[ctx.rank]:
            objective.load_state_dict(states[ctx.rank][objective.name])


class TrainerState(Protocol):
    """The parts of a ``trainer.train.Trainer`` a checkpoint holds."""

    config: Any  # TrainConfig
    ctx: DistContext
    out: Path
    encoder: nn.Module
    frozen: set[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any  # HybridBatchSampler
    dev: Any  # DevTracker
    objectives: list[tuple[Any, float]]  # (Objective, weight)
    step: int
    train_seconds: float
    last_loss: float | None


def save_checkpoint(trainer: TrainerState) -> None:
    """Write ``<out>/checkpoint.pt`` (rank 0, atomically) with every rank's RNG; all ranks must call it."""
    rng = dist_utils.all_gather_object(rng_state(trainer.ctx.device))
    objectives = dist_utils.all_gather_object(objective_states(trainer.objectives))
    if trainer.ctx.is_main:
        atomic_save({
            "format": CHECKPOINT_FORMAT,
            "step": trainer.step,
            "config": trainer.config.to_dict(),
            "world_size": trainer.ctx.world_size,
            "model": trainable_state(trainer.encoder, trainer.frozen),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "sampler": trainer.sampler.state_dict(),
            "rng": rng,
            **trainer.dev.state_dict(),  # dev_history, best, evals_since_best
            "train_seconds": trainer.train_seconds,
            "last_loss": trainer.last_loss,
            **({"objectives": objectives} if any(objectives) else {}),  # per rank: {name: state}
        }, trainer.out / CHECKPOINT_FILE)
    dist_utils.barrier()


def read_checkpoint(path: Path, config: dict) -> dict:
    """The checkpoint at ``path``, refused when it is not one or was written with a different ``config``
    (run-control fields aside; fields added to the config since it was written count as their defaults)."""
    state = load(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint of this version")
    saved = config_from_dict(state["config"], f"{path}: config").to_dict()
    changed = config_differences(saved, config)
    if changed:
        raise ValueError(f"{path}: the config differs from the checkpoint's: {'; '.join(changed)}")
    return state


def load_checkpoint(trainer: TrainerState, path: Path) -> None:
    """Restore ``trainer`` from ``path`` (every rank); a ``best.pt`` that does not match restarts dev selection."""
    state = read_checkpoint(path, trainer.config.to_dict())
    load_trainable_state(trainer.encoder, state["model"], path)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.step, trainer.train_seconds, trainer.last_loss = state["step"], state["train_seconds"], state["last_loss"]
    trainer.dev.load_state_dict(state)
    if trainer.ctx.is_main and not best_file_matches(trainer.out, trainer.dev.best, trainer.step):
        trainer.dev.restart()
    restore_rng(state["rng"], trainer.ctx)
    restore_objectives(trainer.objectives, state.get("objectives"), trainer.ctx)
    if trainer.ctx.is_main:
        log.info("resumed from %s at step %d", path, trainer.step)


def truncate_rows(path: Path, step: int) -> None:
    """Steps after the checkpoint we resume from are run again: drop their rows from a JSONL log."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
