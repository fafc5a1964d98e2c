"""Training objectives: what one step minimises, as a weighted sum of named terms.

An objective has a ``name`` and ``loss(step: StepInputs) -> torch.Tensor``; optionally ``global_batch``
(default True, see below) and ``state_dict()`` / ``load_state_dict(state)`` for state of its own that the
checkpoint must keep (an RNG of its own, say; saved per rank). ``build_objectives`` pairs each with its
weight from the config (``trainer.config.OBJECTIVE_WEIGHTS`` names the fields; weight 0 leaves an objective
out) and ``weighted_loss`` sums them, reporting each unweighted term for the log. Today there is one,
``ContrastiveObjective`` (the hybrid-batch InfoNCE).

Distributed semantics (``torchrun``): every rank draws the same global batch and embeds its own slice
(``StepInputs.local``); DDP *averages* the gradients of the ranks.

- ``global_batch = True``: the objective returns the loss of the *whole* global batch, the same value on
  every rank, with gradient through this rank's rows only (gather the others with
  ``trainer.distributed.gather_rows``: local rows keep their gradient, the others are constants). It is
  backpropagated times ``world_size``, so the average of the per-rank gradients is exactly the gradient of
  a single process holding the whole batch.
- ``global_batch = False``: the loss of this rank's own rows only (e.g. pairs each rank draws itself);
  backpropagated as is, so DDP's average is the gradient of the mean over ranks.

Run every forward pass that needs a gradient through ``StepInputs.model`` (the DDP wrapper), not through
``StepInputs.encoder``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from torch import nn

from trainer.config import TrainConfig, objective_weight
from trainer.distributed import DistContext, gather_rows
from trainer.loss import info_nce
from trainer.modeling import SentenceEncoder
from trainer.sampler import Batch, Pair


@dataclass
class StepInputs:
    """What an objective sees of one training step."""

    batch: Batch  # the global batch, identical on every rank
    model: nn.Module  # forward pass with gradient (DistributedDataParallel under torchrun)
    encoder: SentenceEncoder  # the unwrapped encoder: tokenizer, contract, parameters
    ctx: DistContext

    @property
    def shards(self) -> list[tuple[Pair, ...]]:
        """Every rank's slice of the batch, in rank order."""
        return [self.batch.shard(r, self.ctx.world_size) for r in range(self.ctx.world_size)]

    @property
    def local(self) -> tuple[Pair, ...]:
        return self.batch.shard(self.ctx.rank, self.ctx.world_size)

    def embed(self, texts: Sequence[str], kind: str, max_length: int) -> torch.Tensor:
        """Embeddings of this rank's ``texts`` (with gradient)."""
        tokens = self.encoder.tokenize(list(texts), kind, max_length=max_length)  # type: ignore[arg-type]
        return self.model(**{key: value.to(self.ctx.device) for key, value in tokens.items()})


class Objective(Protocol):
    name: str  # the log's ``loss_<name>`` column, the key of its state in the checkpoint

    def loss(self, step: StepInputs) -> torch.Tensor:
        """A scalar: the global batch's loss, or this rank's with ``global_batch = False`` (module docstring)."""
        ...


def _text_ids(texts: Sequence[str], device: torch.device) -> torch.Tensor:
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(text, len(index)) for text in texts], device=device)


class ContrastiveObjective:
    """InfoNCE of every query of the global batch against every passage of it plus the hard negatives;
    candidates with the same text as a query's positive are masked (``trainer.loss.info_nce``)."""

    name = "contrastive"
    global_batch = True

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def loss(self, step: StepInputs) -> torch.Tensor:
        cfg, world, device = self.config, step.ctx.world_size, step.ctx.device
        per_rank = cfg.batch_size // world
        shards, local = step.shards, step.local
        negative_counts = [sum(len(pair.hard_negatives) for pair in shard) for shard in shards]

        query_vectors = step.embed([p.question for p in local], "query", cfg.query_max_length)
        passage_vectors = step.embed([p.passage for p in local] + [n for p in local for n in p.hard_negatives],
                                     "passage", cfg.max_length)

        all_queries = gather_rows(query_vectors, [per_rank] * world)
        candidates = gather_rows(passage_vectors[:per_rank], [per_rank] * world)
        candidate_texts = [pair.passage for pair in step.batch.pairs]
        if any(negative_counts):
            negatives = gather_rows(passage_vectors[per_rank:], negative_counts)
            candidates = torch.cat([candidates, negatives])
            candidate_texts += [n for shard in shards for pair in shard for n in pair.hard_negatives]

        return info_nce(
            all_queries, candidates, torch.arange(cfg.batch_size, device=device), cfg.temperature,
            cfg.symmetric, passage_ids=_text_ids(candidate_texts, device),
            query_ids=_text_ids([pair.question for pair in step.batch.pairs], device),
        )


def build_objectives(config: TrainConfig, encoder: SentenceEncoder | None = None, ctx: DistContext | None = None,
                     run_dir: Path | None = None) -> list[tuple[Objective, float]]:
    """The configured objectives with their weights; weight 0 leaves one out (``config.validate`` makes sure
    one is left). A new objective: a class with ``name`` and ``loss``, its weight field in
    ``trainer.config.OBJECTIVE_WEIGHTS`` and a line here."""
    candidates: list[tuple[Objective, str]] = [(ContrastiveObjective(config), "contrastive_weight")]
    if config.distill is not None and config.distill.weight > 0:
        if encoder is None or ctx is None or run_dir is None:
            raise ValueError("the distillation objective needs the encoder, the process context and the run directory")
        from trainer.distill import DistillationObjective

        # Built before any update: its teacher vectors come from the encoder as it is now (the base model).
        candidates.append((DistillationObjective(config.distill, encoder, run_dir, config.seed, ctx.rank,
                                                 write=ctx.is_main), "distill.weight"))
    weighted = [(objective, objective_weight(config, field)) for objective, field in candidates]
    return [(objective, weight) for objective, weight in weighted if weight > 0]


def weighted_loss(objectives: Sequence[tuple[Objective, float]], step: StepInputs
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(to_backpropagate, total, terms)``: ``total = sum(weight * loss)`` (the logged loss), the same sum
    with every global-batch term times ``world_size`` (module docstring), and each unweighted term by name."""
    world = step.ctx.world_size
    backward: torch.Tensor | None = None
    total: torch.Tensor | None = None
    terms: dict[str, float] = {}
    for objective, weight in objectives:
        term = objective.loss(step)
        terms[objective.name] = float(term.detach())
        loss = weight * term
        scaled = loss * world if getattr(objective, "global_batch", True) else loss
        total = loss if total is None else total + loss
        backward = scaled if backward is None else backward + scaled
    if total is None or backward is None:
        raise ValueError("no objective to train (every objective weight is 0)")
    return backward, total, terms
