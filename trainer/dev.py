"""Early stopping on held-out *train* articles of an XQuAD-R-format directory (never its test half).

``load_dev_split`` picks the articles; ``DevTracker`` evaluates them with the evaluator's own LAReQA code
(through ``TorchEncoderAdapter``) and keeps the history, the best result and the patience count, which the
checkpoint saves and restores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from evaluation.lareqa import LareqaSet, evaluate_lareqa, load_lareqa
from trainer.config import DevConfig, TrainConfig
from trainer.data import SPLIT_FILE, SquadSplit
from trainer.modeling import SentenceEncoder


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


class DevTracker:
    """Dev history, best result and evaluations since the best (no dev split: the state stays empty)."""

    def __init__(self, config: DevConfig | None, split: DevSplit | None) -> None:
        self.config, self.split = config, split
        self.history: list[dict] = []
        self.best: dict | None = None
        self.evals_since_best = 0

    def due(self, step: int, last_step: int) -> bool:
        return self.config is not None and (step % self.config.every == 0 or step == last_step)

    @property
    def exhausted(self) -> bool:
        """Patience is used up: training should stop."""
        patience = self.config.patience if self.config is not None else None
        return patience is not None and self.evals_since_best >= patience

    def metrics(self, encoder: SentenceEncoder) -> dict[str, float]:
        """The LAReQA figures of the held-out dev articles (the evaluator's own code)."""
        figures = evaluate_lareqa(TorchEncoderAdapter(encoder, self.config.batch_size), self.split.data)
        return {name: round(value, 5) for name, value in figures.items() if isinstance(value, float)}

    def evaluate(self, encoder: SentenceEncoder, step: int, on_best: Callable[[dict], None]) -> str:
        """Evaluate at ``step`` and update the bookkeeping; ``on_best(metrics)`` stores the weights of a new
        best. Returns a one-line report."""
        started = time.perf_counter()
        metrics = self.metrics(encoder)
        metric = self.config.metric
        if metric not in metrics:
            raise ValueError(f"dev.metric {metric!r} is not among the dev metrics {sorted(metrics)}")
        self.history.append({"step": step, **metrics, "seconds": round(time.perf_counter() - started, 1)})
        value = metrics[metric]
        improved = self.best is None or value > self.best["value"]
        if improved:
            self.best = {"step": step, "metric": metric, "value": value, "metrics": metrics}
            self.evals_since_best = 0
            on_best(metrics)
        else:
            self.evals_since_best += 1
        note = "best" if improved else f"best {self.best['value']:.4f} at step {self.best['step']}"
        return f"dev step {step}: {metric}={value:.4f} ({note})"

    def restart(self) -> None:
        """Forget the best result (its weights are gone): selection starts afresh."""
        self.best, self.evals_since_best = None, 0

    # The checkpoint's keys for this state (top level, as written since format 1).
    def state_dict(self) -> dict:
        return {"dev_history": self.history, "best": self.best, "evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best, self.evals_since_best = state["dev_history"], state["best"], state["evals_since_best"]
