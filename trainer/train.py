"""Hybrid-batch fine-tuning: single process or ``torchrun`` + DistributedDataParallel, resumable.

One step: every rank draws the same global batch (shared sampler seed) and embeds its own slice; the
query and passage embeddings of all ranks are gathered (local rows keep their gradient) and every rank
computes the InfoNCE loss of the *whole* batch, so each query sees every passage of the global batch as a
negative. Backpropagating ``loss * world_size`` through DDP's gradient averaging gives exactly the
gradient of a single process holding the whole batch.

Output directory layout::

    checkpoint.pt        last checkpoint: model (trainable part), optimizer, scheduler, sampler RNG, per-rank
                         torch RNG, step, dev history (written atomically)
    best.pt              weights with the best dev metric so far (when a dev split is configured)
    train_log.jsonl      one row per step: loss, lr, batch kind/language/dataset, seconds
    trace/rank<r>.jsonl  each rank's batches (``trace_batches: true``)
    artifact/            the exported ONNX artifact, its metadata holding the config and the dev metrics
"""
from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from encoder.files import atomic_path
from evaluation.lareqa import LareqaSet, evaluate_lareqa, load_lareqa
from trainer import distributed as dist_utils
from trainer.config import TrainConfig, config_differences, config_from_dict
from trainer.data import (
    SPLIT_FILE, ParallelDataset, SquadSplit, load_jsonl, load_ntrex, load_squad2_fi, load_squad_sentences,
)
from trainer.distributed import DistContext, gather_rows
from trainer.loss import info_nce
from trainer.modeling import SentenceEncoder, load_base, tiny_encoder
from trainer.sampler import Batch, HybridBatchSampler

log = logging.getLogger("trainer")

CHECKPOINT_FILE, BEST_FILE, LOG_FILE, ARTIFACT_DIR = "checkpoint.pt", "best.pt", "train_log.jsonl", "artifact"
CHECKPOINT_FORMAT = "babelsearch-train-checkpoint/1"
TINY_BASE = "tiny-random"
REPEAT_SIGNAL_SECONDS = 3.0


class StopTraining(Exception):
    pass


@dataclass
class TrainResult:
    step: int
    stopped: str  # completed | early_stopped | stop_at | interrupted
    output_dir: Path
    artifact: Path | None = None
    best: dict | None = None
    dev_history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------- building


def build_encoder(config: TrainConfig) -> SentenceEncoder:
    encoder = tiny_encoder(seed=config.seed) if config.base == TINY_BASE else load_base(config.base)
    if config.freeze_word_embeddings:
        encoder.freeze_word_embeddings()
    return encoder


def frozen_names(encoder: SentenceEncoder) -> set[str]:
    """Weights training leaves alone: checkpoints omit them (they come back from the base model)."""
    return {name for name, parameter in encoder.named_parameters() if not parameter.requires_grad}


def load_trainable_state(encoder: SentenceEncoder, state: dict[str, torch.Tensor], source: Path) -> None:
    frozen = frozen_names(encoder)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or set(missing) - frozen:
        raise RuntimeError(f"{source} does not match the model: missing {sorted(set(missing) - frozen)}, "
                           f"unexpected {sorted(unexpected)}")


def _set_dropout(model: nn.Module, probability: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
    config = getattr(getattr(model, "backbone", None), "config", None)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if config is not None and hasattr(config, name):
            setattr(config, name, probability)


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


@dataclass(frozen=True)
class DevSplit:
    """Train-half articles held out for early stopping, and their LAReQA data."""

    split: SquadSplit
    articles: tuple[int, ...]
    data: LareqaSet


def load_dev_split(config: TrainConfig) -> DevSplit | None:
    if config.dev is None:
        return None
    split_path = Path(config.dev.path) / SPLIT_FILE
    if not split_path.is_file():
        raise FileNotFoundError(f"dev.path needs an XQuAD-R-format directory with {SPLIT_FILE}: {split_path}")
    split = SquadSplit.load(split_path)
    articles = split.dev_articles(config.dev.articles)
    return DevSplit(split, articles, load_lareqa(config.dev.path, articles=articles))


def load_datasets(config: TrainConfig, dev: DevSplit | None = None) -> list[ParallelDataset]:
    """Every configured dataset; the dev articles are held out of an XQuAD-R-format dataset they belong to."""
    datasets = []
    for spec in config.datasets:
        path = Path(spec.path)
        if not path.exists():
            raise FileNotFoundError(f"dataset {spec.name or spec.path}: {path} does not exist")
        if spec.format == "jsonl":
            dataset = load_jsonl(path, spec.name)
        elif spec.format == "squad":
            exclude = dev.articles if dev and _same_path(path, config.dev.path) else ()
            dataset = load_squad_sentences(path, spec.name, exclude_articles=exclude,
                                           paragraph_negatives=spec.paragraph_negatives)
        elif spec.format == "squad2-fi":
            file = next(path.glob("*.jsonl"), None) if path.is_dir() else path
            if file is None:
                raise FileNotFoundError(f"dataset {spec.name or spec.path}: no .jsonl file in {path}")
            dataset = load_squad2_fi(file, spec.name or "squad2-fi")
        else:
            dataset = load_ntrex(path, spec.name or "ntrex128", spec.sentences_per_passage, spec.languages)
        if spec.languages is not None:
            dataset = dataset.restrict_languages(spec.languages)
        if spec.max_groups is not None:
            dataset = dataset.limit(spec.max_groups)
        dataset.weight = spec.weight
        datasets.append(dataset)
    if dev is not None:
        dev_ids = set(dev.data.query_id)
        for dataset in datasets:
            ids = {g.id for g in dataset.groups}
            # Test-half questions are the reported evaluation; dev questions decide early stopping.
            assert not ids & dev.split.test_ids, f"{dataset.name}: test-half questions in the training data"
            assert not ids & dev_ids, f"{dataset.name}: dev questions in the training data"
    return datasets


class TorchEncoderAdapter:
    """``encode(texts, kind) -> np.ndarray`` over a training ``SentenceEncoder`` (for the torch-free evaluator).

    Texts are embedded in length-sorted chunks, so each chunk pads to its own longest text.
    """

    def __init__(self, encoder: SentenceEncoder, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.contract = encoder.contract
        self.dim = encoder.contract.dim

    def encode(self, texts: Sequence[str], kind: str, **_: Any) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        device = next(self.encoder.parameters()).device
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                tokens = self.encoder.tokenize([texts[i] for i in chunk], kind)  # type: ignore[arg-type]
                vectors = self.encoder(**{k: v.to(device) for k, v in tokens.items()})
                out[chunk] = vectors.float().cpu().numpy()
        self.encoder.train(was_training)
        return out


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _text_ids(texts: Sequence[str], device: torch.device) -> torch.Tensor:
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(text, len(index)) for text in texts], device=device)


# ------------------------------------------------------------------------------------ trainer


class Trainer:
    def __init__(self, config: TrainConfig, ctx: DistContext, resume: bool = False) -> None:
        self.config, self.ctx = config, ctx
        self.out = Path(config.output_dir)
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed + ctx.rank)  # dropout differs per rank, like distinct data would

        self.dev = load_dev_split(config)
        self.datasets = load_datasets(config, self.dev)
        if ctx.is_main:
            for dataset in self.datasets:
                log.info("dataset %s", dataset.summary())
        self.sampler = HybridBatchSampler(self.datasets, config.batch_size, config.alpha, config.seed,
                                          config.hard_negatives)

        self.encoder = build_encoder(config)
        if config.dropout is not None:
            _set_dropout(self.encoder, config.dropout)
        self.encoder.to(ctx.device).train()
        self.frozen = frozen_names(self.encoder)
        self.model: nn.Module = self.encoder
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.encoder, device_ids=device_ids)

        decay, no_decay = [], []
        for name, parameter in self.encoder.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 else decay).append(parameter)  # no decay on biases and norms
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _linear_schedule(config.warmup_steps, config.steps)
        )
        self.step = 0
        self.dev_history: list[dict] = []
        self.best: dict | None = None
        self.evals_since_best = 0
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
            self._truncate_rows(self.out / LOG_FILE)
        self._truncate_rows(self._trace_path())  # each rank its own

    # ------------------------------------------------------------------------------ state

    def _model_state(self) -> dict[str, torch.Tensor]:
        # Frozen word embeddings are most of e5-small's weights; they come back from the base model.
        return {k: v.detach().cpu() for k, v in self.encoder.state_dict().items() if k not in self.frozen}

    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        return state

    def save_checkpoint(self) -> None:
        rng = dist_utils.all_gather_object(self._rng_state())
        if self.ctx.is_main:
            _atomic_save({
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "config": self.config.to_dict(),
                "world_size": self.ctx.world_size,
                "model": self._model_state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(),
                "rng": rng,
                "dev_history": self.dev_history,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "train_seconds": self.train_seconds,
                "last_loss": self.last_loss,
            }, self.out / CHECKPOINT_FILE)
        dist_utils.barrier()

    def _load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a training checkpoint of this version")
        changed = config_differences(state["config"], self.config.to_dict())
        if changed:
            raise ValueError(f"{path}: the config differs from the checkpoint's: {'; '.join(changed)}")
        load_trainable_state(self.encoder, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.dev_history, self.best = state["dev_history"], state["best"]
        self.evals_since_best, self.train_seconds = state["evals_since_best"], state["train_seconds"]
        self.last_loss = state["last_loss"]
        if self.ctx.is_main:
            self._check_best_file()
        if state["world_size"] == self.ctx.world_size:
            rng = state["rng"][self.ctx.rank]
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.ctx.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.ctx.device)
        elif self.ctx.is_main:
            log.warning("resuming with %d processes instead of %d: dropout randomness will differ",
                        self.ctx.world_size, state["world_size"])
        if self.ctx.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    def _check_best_file(self) -> None:
        """``best.pt`` must hold the weights the checkpoint calls best. A crash between writing it and the next
        checkpoint (or dev steps that changed on resume) leaves one from a step this run will replay: the
        checkpoint's best weights are then gone, so dev selection starts afresh from here."""
        path = self.out / BEST_FILE
        step = torch.load(path, map_location="cpu", weights_only=False)["step"] if path.is_file() else None
        if (self.best is not None and step == self.best["step"]) or (self.best is None and step is None):
            return
        log.warning("%s is from step %s but the checkpoint's best is %s: dev selection restarts at step %d",
                    path, step, self.best and self.best["step"], self.step)
        path.unlink(missing_ok=True)
        self.best, self.evals_since_best = None, 0

    def _truncate_rows(self, path: Path) -> None:
        """Steps after the checkpoint we resume from are run again: drop their rows from a JSONL log."""
        if not path.is_file():
            return
        rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step]
        path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")

    def _trace_path(self) -> Path:
        return self.out / "trace" / f"rank{self.ctx.rank}.jsonl"

    # ------------------------------------------------------------------------------- step

    def _to_device(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.ctx.device) for key, value in tokens.items()}

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on the global ``batch``; returns its loss, gradient norm and learning rate."""
        cfg, world, rank = self.config, self.ctx.world_size, self.ctx.rank
        per_rank = cfg.batch_size // world
        shards = [batch.shard(r, world) for r in range(world)]
        local = shards[rank]
        negative_counts = [sum(len(pair.hard_negatives) for pair in shard) for shard in shards]

        queries = self.encoder.tokenize([p.question for p in local], "query", max_length=cfg.query_max_length)
        passages = self.encoder.tokenize(
            [p.passage for p in local] + [n for p in local for n in p.hard_negatives], "passage",
            max_length=cfg.max_length,
        )
        query_vectors = self.model(**self._to_device(queries))
        passage_vectors = self.model(**self._to_device(passages))

        all_queries = gather_rows(query_vectors, [per_rank] * world)
        candidates = gather_rows(passage_vectors[:per_rank], [per_rank] * world)
        candidate_texts = [pair.passage for pair in batch.pairs]
        if any(negative_counts):
            negatives = gather_rows(passage_vectors[per_rank:], negative_counts)
            candidates = torch.cat([candidates, negatives])
            candidate_texts += [n for shard in shards for pair in shard for n in pair.hard_negatives]

        device = self.ctx.device
        loss = info_nce(
            all_queries, candidates, torch.arange(cfg.batch_size, device=device), cfg.temperature, cfg.symmetric,
            passage_ids=_text_ids(candidate_texts, device),
            query_ids=_text_ids([pair.question for pair in batch.pairs], device),
        )
        (loss * world).backward()  # DDP averages gradients over ranks; see the module docstring
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.encoder.parameters() if p.requires_grad],
                                                   cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr}

    # -------------------------------------------------------------------------------- dev

    def _dev_metrics(self) -> dict[str, float]:
        """The LAReQA figures of the held-out dev articles (the evaluator's own code)."""
        adapter = TorchEncoderAdapter(self.encoder, self.config.dev.batch_size)
        figures = evaluate_lareqa(adapter, self.dev.data)
        return {name: round(value, 5) for name, value in figures.items() if isinstance(value, float)}

    def evaluate_dev(self) -> bool:
        """Evaluate on rank 0, keep the best weights; True when patience is exhausted (on every rank)."""
        dev = self.config.dev
        decision = None
        if self.ctx.is_main:
            started = time.perf_counter()
            metrics = self._dev_metrics()
            if dev.metric not in metrics:
                raise KeyError(f"dev.metric {dev.metric!r} is not among the dev metrics {sorted(metrics)}")
            row = {"step": self.step, **metrics, "seconds": round(time.perf_counter() - started, 1)}
            self.dev_history.append(row)
            value = metrics[dev.metric]
            improved = self.best is None or value > self.best["value"]
            if improved:
                self.best = {"step": self.step, "metric": dev.metric, "value": value, "metrics": metrics}
                self.evals_since_best = 0
                _atomic_save({"step": self.step, "model": self._model_state(), "metrics": metrics},
                             self.out / BEST_FILE)
            else:
                self.evals_since_best += 1
            note = "best" if improved else f"best {self.best['value']:.4f} at step {self.best['step']}"
            tqdm.write(f"dev step {self.step}: {dev.metric}={value:.4f} ({note})")
            decision = (self.dev_history, self.best, self.evals_since_best)
        self.dev_history, self.best, self.evals_since_best = dist_utils.broadcast_object(decision)
        return dev.patience is not None and self.evals_since_best >= dev.patience

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
                loss = stats["loss"]
                self.step += 1
                seconds = time.perf_counter() - started
                self.train_seconds += seconds
                self.last_loss = loss
                if trace is not None:
                    local = batch.shard(self.ctx.rank, self.ctx.world_size)
                    trace.write(json.dumps({"step": self.step, **batch.describe(),
                                            "groups": [p.group for p in local],
                                            "languages": [[p.query_language, p.passage_language] for p in local]})
                                + "\n")
                if log_file is not None:
                    log_file.write(json.dumps({"step": self.step, "loss": round(loss, 5),
                                               "grad_norm": round(stats["grad_norm"], 5), "lr": stats["lr"],
                                               **batch.describe(), "seconds": round(seconds, 3)}) + "\n")
                    log_file.flush()
                progress.set_postfix(loss=f"{loss:.4f}", batch=batch.language or "cross")
                progress.update(1)

                stop_early = False
                if cfg.dev is not None and (self.step % cfg.dev.every == 0 or self.step == cfg.steps):
                    stop_early = self.evaluate_dev()
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
            if trace is not None:
                trace.close()
            if log_file is not None:
                log_file.close()

        result = TrainResult(self.step, stopped, self.out, best=self.best, dev_history=self.dev_history)
        if stopped in ("completed", "early_stopped") and cfg.export:
            result.artifact = self.export(stopped)
        return result

    def training_record(self, stopped: str) -> dict:
        return {
            "method": "hybrid-batch contrastive fine-tuning (arXiv 2408.10536)",
            "config": self.config.to_dict(),
            "steps": self.step,
            "stopped": stopped,
            "world_size": self.ctx.world_size,
            "train_seconds": round(self.train_seconds, 1),
            "seconds_per_step": round(self.train_seconds / max(1, self.step), 3),
            "final_loss": self.last_loss,
            "datasets": {d.name: {"groups": len(d.groups), "languages": d.languages} for d in self.datasets},
            "dev": None if self.config.dev is None else {
                "metric": self.config.dev.metric, "best": self.best, "history": self.dev_history,
                "articles": list(self.dev.articles),
            },
            "exported_weights": f"best dev step {self.best['step']}" if self.best else f"step {self.step}",
        }

    def export(self, stopped: str) -> Path | None:
        from trainer.export import export_artifact

        path = None
        if self.ctx.is_main:
            if self.best is not None:
                best = self.out / BEST_FILE
                load_trainable_state(self.encoder, torch.load(best, map_location="cpu", weights_only=False)["model"], best)
            self.encoder.eval()
            path = export_artifact(self.encoder.cpu(), self.out / ARTIFACT_DIR, training=self.training_record(stopped),
                                   quantize=self.config.quantize, calibration_data=self.config.calibration_data)
            tqdm.write(f"exported {path}")
        dist_utils.barrier()
        return path


def export_run(run_dir: str | Path, weights: str = "last", out: str | Path | None = None) -> Path:
    """Export a run's ``last`` (checkpoint) or ``best`` (dev) weights to an artifact, e.g. to compare runs
    at an equal number of steps whatever their dev split picked."""
    run_dir = Path(run_dir)
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    source = run_dir / (CHECKPOINT_FILE if weights == "last" else BEST_FILE)
    if not source.is_file():
        raise FileNotFoundError(f"{run_dir}: no {source.name} (a run's output_dir holds {CHECKPOINT_FILE}"
                                f"{f' and, with a dev split, {BEST_FILE}' if weights == 'best' else ''})")
    checkpoint = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    state = checkpoint if weights == "last" else torch.load(source, map_location="cpu", weights_only=False)
    config = config_from_dict(checkpoint["config"])
    encoder = build_encoder(config)
    load_trainable_state(encoder, state["model"], source)
    previous = run_dir / ARTIFACT_DIR / "artifact.json"
    record = json.loads(previous.read_text(encoding="utf-8"))["training"] if previous.is_file() else {
        "config": checkpoint["config"], "steps": checkpoint["step"]}
    record["exported_weights"] = f"{weights}: step {state['step']}"
    from trainer.export import export_artifact

    return export_artifact(encoder.eval(), out or run_dir / f"{ARTIFACT_DIR}-{weights}", training=record,
                           quantize=config.quantize, calibration_data=config.calibration_data)


def train(config: TrainConfig, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) one training run in this process; under ``torchrun`` each rank calls this."""
    ctx = dist_utils.init_distributed(config.device)
    try:
        return Trainer(config, ctx, resume=resume).run(stop_at=stop_at)
    finally:
        dist_utils.shutdown()
