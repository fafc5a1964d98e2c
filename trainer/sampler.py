"""Hybrid batches (arXiv 2408.10536): each batch is built as a whole, either monolingual or cross-lingual.

- with probability ``alpha`` a *monolingual* batch: one language, drawn uniformly among the chosen
  dataset's languages; every pair is (question, passage) in that language;
- otherwise a *cross-lingual* batch: every pair has question language != passage language, the ordered
  language pair drawn uniformly among the ones the group has.

The dataset of a batch is drawn in proportion to its size (or its configured weight). No two groups that
share a conflict key (same question, or the same passage in any language) are in one batch: their parallel
passages would be false negatives. ``alpha = 1`` is X-X-mono, ``alpha = 0`` is X-Y, ``alpha = 0.5`` hybrid.

Every DDP rank runs an identical sampler (same seed), so all ranks agree on the batch type, dataset and
language of each step, and each takes its own slice of the pairs (``Batch.shard``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np

from trainer.data import Group, ParallelDataset

log = logging.getLogger(__name__)

BatchKind = Literal["mono", "cross"]
# Random draws before falling back to a full shuffled scan (datasets with many conflicting groups).
DRAW_ATTEMPTS_PER_PAIR = 20


@dataclass(frozen=True)
class Pair:
    group: str
    query_language: str
    passage_language: str
    question: str
    passage: str
    hard_negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    kind: BatchKind
    dataset: str
    language: str | None  # the language of a monolingual batch
    pairs: tuple[Pair, ...]

    def shard(self, rank: int, world_size: int) -> tuple[Pair, ...]:
        per_rank = len(self.pairs) // world_size
        return self.pairs[rank * per_rank : (rank + 1) * per_rank]

    def describe(self) -> dict:
        return {"kind": self.kind, "dataset": self.dataset, "language": self.language}


class HybridBatchSampler:
    def __init__(
        self,
        datasets: Sequence[ParallelDataset],
        batch_size: int,
        alpha: float = 0.5,
        seed: int = 0,
        hard_negatives: int = 0,
    ) -> None:
        if not datasets:
            raise ValueError("at least one dataset is needed")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {batch_size}")
        if len({d.name for d in datasets}) != len(datasets):
            raise ValueError(f"dataset names must be unique: {[d.name for d in datasets]}")
        self.datasets = list(datasets)
        self.batch_size = batch_size
        self.alpha = alpha
        self.hard_negatives = hard_negatives
        self.rng = np.random.Generator(np.random.PCG64(seed))

        # Languages of each dataset that can fill a whole monolingual batch.
        self.mono_languages: list[list[str]] = []
        for dataset in self.datasets:
            usable = [lang for lang, ids in dataset.by_language.items() if len(ids) >= batch_size]
            skipped = sorted(set(dataset.languages) - set(usable))
            if skipped:
                log.warning("%s: languages %s have fewer than %d groups; no monolingual batches in them",
                            dataset.name, skipped, batch_size)
            self.mono_languages.append(usable)
        self.mono_datasets = [i for i, langs in enumerate(self.mono_languages) if langs]
        self.cross_datasets = [i for i, d in enumerate(self.datasets) if len(d.multilingual) >= batch_size]
        if alpha > 0 and not self.mono_datasets:
            raise ValueError(f"alpha={alpha} needs monolingual batches, but no dataset has a language with "
                             f">= {batch_size} groups")
        if alpha < 1 and not self.cross_datasets:
            raise ValueError(f"alpha={alpha} needs cross-lingual batches, but no dataset has >= {batch_size} "
                             "groups in two or more languages")

    # ----------------------------------------------------------------------------------- drawing

    def _pick_dataset(self, eligible: list[int]) -> int:
        sizes = np.array([self.datasets[i].size for i in eligible], dtype=np.float64)
        return eligible[int(self.rng.choice(len(eligible), p=sizes / sizes.sum()))]

    def _draw_groups(self, dataset: ParallelDataset, candidates: list[int]) -> list[Group]:
        chosen: list[int] = []
        taken: set[str] = set()

        def offer(index: int) -> None:
            keys = dataset.groups[index].conflict_keys
            if not keys & taken:
                chosen.append(index)
                taken.update(keys)

        for _ in range(DRAW_ATTEMPTS_PER_PAIR * self.batch_size):
            if len(chosen) == self.batch_size:
                break
            offer(candidates[int(self.rng.integers(len(candidates)))])
        if len(chosen) < self.batch_size:
            for position in self.rng.permutation(len(candidates)):
                offer(candidates[int(position)])
                if len(chosen) == self.batch_size:
                    break
        if len(chosen) < self.batch_size:
            raise RuntimeError(f"{dataset.name}: only {len(chosen)} mutually non-conflicting groups; "
                               f"cannot fill a batch of {self.batch_size}")
        return [dataset.groups[i] for i in chosen]

    def _negatives(self, negatives: tuple[str, ...]) -> tuple[str, ...]:
        if not self.hard_negatives or not negatives:
            return ()
        count = min(self.hard_negatives, len(negatives))
        return tuple(negatives[int(i)] for i in self.rng.choice(len(negatives), size=count, replace=False))

    def _pair(self, group: Group, query_language: str, passage_language: str) -> Pair:
        query, passage = group.entries[query_language], group.entries[passage_language]
        return Pair(group.id, query_language, passage_language, query.question, passage.passage,
                    self._negatives(passage.hard_negatives))

    def next_batch(self) -> Batch:
        if self.rng.random() < self.alpha:
            index = self._pick_dataset(self.mono_datasets)
            dataset = self.datasets[index]
            languages = self.mono_languages[index]
            language = languages[int(self.rng.integers(len(languages)))]
            groups = self._draw_groups(dataset, dataset.by_language[language])
            return Batch("mono", dataset.name, language, tuple(self._pair(g, language, language) for g in groups))
        dataset = self.datasets[self._pick_dataset(self.cross_datasets)]
        pairs = []
        for group in self._draw_groups(dataset, dataset.multilingual):
            languages = sorted(group.entries)
            n = len(languages)
            draw = int(self.rng.integers(n * (n - 1)))  # uniform over ordered pairs of distinct languages
            query_index, passage_index = divmod(draw, n - 1)
            passage_index += passage_index >= query_index
            pairs.append(self._pair(group, languages[query_index], languages[passage_index]))
        return Batch("cross", dataset.name, None, tuple(pairs))

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    # ---------------------------------------------------------------------------------- resuming

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
