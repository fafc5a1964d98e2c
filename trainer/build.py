"""What a run trains, built from its config: the encoder (frozen word embeddings, dropout override), AdamW
and the learning-rate schedule. Also used to rebuild a run's encoder when exporting its weights."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.modeling import SentenceEncoder, load_base, tiny_encoder

TINY_BASE = "tiny-random"


def build_encoder(config: TrainConfig) -> SentenceEncoder:
    """The base model, with its word embeddings frozen and, for a LoRA run, wrapped so that only the
    adapter trains (``trainer.lora``)."""
    encoder = tiny_encoder(seed=config.seed) if config.base == TINY_BASE else load_base(config.base)
    if config.freeze_word_embeddings:
        encoder.freeze_word_embeddings()
    if config.lora is not None:
        from trainer.lora import apply_lora

        apply_lora(encoder, config.lora)
    return encoder


def set_dropout(model: nn.Module, probability: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
    config = getattr(getattr(model, "backbone", None), "config", None)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if config is not None and hasattr(config, name):
            setattr(config, name, probability)


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def build_optimizer(encoder: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable weights (no weight decay on biases and norms) and the linear warmup/decay
    schedule."""
    decay, no_decay = [], []
    for parameter in encoder.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(config.warmup_steps, config.steps))
    return optimizer, scheduler
