"""A run's weights as an ONNX artifact: at the end of training (``export_trained``: the dev-best weights, else
the last, with the training record in the artifact's metadata) and afterwards (``export_run``, behind
``python -m trainer export RUN_DIR --weights last|best``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from encoder.calibration import CALIBRATION_FILE
from trainer import checkpoints as ckpt
from trainer import distributed as dist_utils
from trainer.build import build_encoder
from trainer.checkpoints import ARTIFACT_DIR, BEST_FILE
from trainer.config import config_from_dict
from trainer.quantize import QUANTIZATION_FILE


ADAPTER_DIR = "adapter"


def training_method(config: Any) -> str:
    parts = []
    if config.contrastive_weight > 0:
        parts.append(f"hybrid-batch contrastive fine-tuning (arXiv 2408.10536, alpha={config.alpha})")
    if config.distill is not None and config.distill.weight > 0:
        parts.append(f"multilingual distillation onto the base model's English vectors (weight {config.distill.weight})")
    method = " + ".join(parts)
    return f"{method}; LoRA adapter r={config.lora.r}" if config.lora is not None else method


def _export(encoder: Any, config: Any, target: Path, adapter_dir: Path, record: dict) -> Path:
    """Write the artifact of ``encoder`` to ``target``. A LoRA run's adapter is saved to ``adapter_dir`` first
    and folded into the weights; the artifact's calibration statistics and int8 recipe are copied beside it
    afterwards, so the adapter carries them (``trainer.export --adapter`` uses them where NTREX-128 is not at
    hand)."""
    from trainer.export import export_artifact

    if config.lora is not None:
        from trainer import lora

        lora.save_adapter(encoder, adapter_dir, config.lora, record)
        encoder = lora.merge(encoder)
    path = export_artifact(encoder.eval(), target, training=record, quantize=config.quantize,
                           calibration_data=config.calibration_data)
    if config.lora is not None:
        for shipped in (CALIBRATION_FILE, QUANTIZATION_FILE):
            if (path / shipped).is_file():
                shutil.copyfile(path / shipped, adapter_dir / shipped)
    return path


def training_record(trainer: Any, stopped: str) -> dict:
    """The artifact's ``training`` entry for a ``trainer.train.Trainer`` that stopped as ``stopped``."""
    best, config = trainer.dev.best, trainer.config
    return {
        "method": training_method(config),
        "config": config.to_dict(),
        "steps": trainer.step,
        "stopped": stopped,
        "world_size": trainer.ctx.world_size,
        "train_seconds": round(trainer.train_seconds, 1),
        "seconds_per_step": round(trainer.train_seconds / max(1, trainer.step), 3),
        "final_loss": trainer.last_loss,
        "datasets": {d.name: {"groups": len(d.groups), "languages": d.languages} for d in trainer.datasets},
        "dev": None if config.dev is None else {
            "metric": config.dev.metric, "best": best, "history": trainer.dev.history,
            "articles": list(trainer.dev_split.articles),
        },
        "exported_weights": f"best dev step {best['step']}" if best else f"step {trainer.step}",
    }


def export_trained(trainer: Any, stopped: str) -> Path | None:
    """Rank 0 exports the trainer's best (else current) weights to ``<output_dir>/artifact``; every rank
    must call it (it ends in a barrier). Returns the artifact's path on rank 0, None elsewhere."""
    path = None
    if trainer.ctx.is_main:
        encoder, best = trainer.encoder, trainer.out / BEST_FILE
        if trainer.dev.best is not None:
            ckpt.load_trainable_state(encoder, ckpt.load(best)["model"], best)
        path = _export(encoder.cpu(), trainer.config, trainer.out / ARTIFACT_DIR, trainer.out / ADAPTER_DIR,
                       trainer.training_record(stopped))
        tqdm.write(f"exported {path}")
    dist_utils.barrier()
    return path


def run_encoder(run_dir: str | Path, weights: str = "last") -> tuple[Any, Any, dict, dict]:
    """A run's ``last`` or ``best`` weights in its encoder (a LoRA run's still wrapped: ``trainer.lora.merge``),
    with the run's config, its checkpoint and the state the weights came from."""
    checkpoint, state, source = ckpt.run_weights(Path(run_dir), weights)
    config = config_from_dict(checkpoint["config"])
    encoder = build_encoder(config)
    ckpt.load_trainable_state(encoder, state["model"], source)
    return encoder, config, checkpoint, state


def export_run(run_dir: str | Path, weights: str = "last", out: str | Path | None = None) -> Path:
    """Export a run's ``last`` (checkpoint) or ``best`` (dev) weights to an artifact, e.g. to compare runs
    at an equal number of steps whatever their dev split picked."""
    run_dir = Path(run_dir)
    encoder, config, checkpoint, state = run_encoder(run_dir, weights)
    previous = run_dir / ARTIFACT_DIR / "artifact.json"
    record = json.loads(previous.read_text(encoding="utf-8"))["training"] if previous.is_file() else {
        "config": checkpoint["config"], "steps": checkpoint["step"]}
    record["exported_weights"] = f"{weights}: step {state['step']}"
    target = Path(out or run_dir / f"{ARTIFACT_DIR}-{weights}")
    return _export(encoder, config, target, target.with_name(target.name + "-adapter"), record)
