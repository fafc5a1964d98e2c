"""Hard negatives mined with the base model: for each question, the passages of its language that the base
model ranks highest but that are not its answer.

    python -m trainer mine --format ntrex --path ../shared/data/train/ntrex128 \\
        --model artifacts/models/e5-small-base --negatives 4 --out runs/mined/ntrex128.jsonl

The output is a ``jsonl`` training dataset (``trainer.data.load_jsonl``): one row per group and language with
``hard_negatives`` and the group's conflict keys as ``passage_id``; a config reads it with
``{format: jsonl, path: ...}`` and takes ``hard_negatives: N`` of them per pair.

A passage is never a negative of a group it could be the answer of: passages whose conflict keys meet the
group's (its own passage; for squad2-fi, its paragraph) are skipped, and so are the ``skip`` highest-ranked
remaining ones, where unlabeled positives (paraphrases, a neighbouring sentence that answers too) live.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from encoder.files import atomic_path
from encoder.protocol import TextEncoder
from trainer.data import Entry, Group, ParallelDataset

log = logging.getLogger(__name__)
SCORE_ROWS = 1024  # questions scored at once: a (1024 x passages) float32 block


@dataclass(frozen=True)
class MiningSettings:
    negatives: int = 4  # hard negatives kept per (group, language)
    skip: int = 0  # highest-ranked non-answers left out (likely unlabeled positives)

    def validate(self) -> None:
        if self.negatives < 1:
            raise ValueError("--negatives must be >= 1")
        if self.skip < 0:
            raise ValueError("--skip must be >= 0")


def _passage_keys(dataset: ParallelDataset, language: str) -> dict[str, frozenset[str]]:
    """Each distinct passage of ``language`` with the conflict keys of every group it answers."""
    keys: dict[str, set[str]] = {}
    for index in dataset.by_language.get(language, []):
        group = dataset.groups[index]
        keys.setdefault(group.entries[language].passage, set()).update(group.conflict_keys)
    return {passage: frozenset(k) for passage, k in keys.items()}


def _top_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """Column indices of each row's ``count`` highest scores, best first."""
    count = min(count, scores.shape[1])
    part = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def mine_language(dataset: ParallelDataset, language: str, encoder: TextEncoder,
                  settings: MiningSettings) -> dict[str, tuple[str, ...]]:
    """Hard negatives of every group with an entry in ``language``: ``{group id: negatives}``."""
    passage_keys = _passage_keys(dataset, language)
    passages = list(passage_keys)
    indices = dataset.by_language.get(language, [])
    groups = [dataset.groups[i] for i in indices]
    passage_vectors = encoder.encode(passages, "passage")
    question_vectors = encoder.encode([g.entries[language].question for g in groups], "query")
    # Enough candidates that the skipped and conflicting ones still leave ``negatives`` (conflicts are few:
    # the positive, and for paragraph data the other questions' shared paragraph).
    wanted = settings.negatives + settings.skip + 16
    mined: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(groups), SCORE_ROWS):
        block = groups[start:start + SCORE_ROWS]
        top = _top_rows(question_vectors[start:start + SCORE_ROWS] @ passage_vectors.T, wanted)
        for group, ranked in zip(block, top):
            positive, keys = group.entries[language].passage, group.conflict_keys
            clean = [passages[j] for j in ranked if passages[j] != positive and not passage_keys[passages[j]] & keys]
            mined[group.id] = tuple(clean[settings.skip:settings.skip + settings.negatives])
    return mined


def mine_dataset(dataset: ParallelDataset, encoder: TextEncoder, settings: MiningSettings) -> ParallelDataset:
    """``dataset`` with every entry's hard negatives replaced by mined ones (per language, same-language
    passages only: a pair's negatives are in its passage's language)."""
    settings.validate()
    by_language = {}
    for number, language in enumerate(dataset.languages, 1):  # progress: a line per language
        started = time.monotonic()
        by_language[language] = mine_language(dataset, language, encoder, settings)
        log.info("mined %s/%s (%d of %d languages): %d questions in %.0f s", dataset.name, language, number,
                 len(dataset.languages), len(by_language[language]), time.monotonic() - started)
    groups = [
        Group(group.id, {language: Entry(entry.question, entry.passage, by_language[language][group.id])
                         for language, entry in group.entries.items()}, group.keys)
        for group in dataset.groups
    ]
    return ParallelDataset(dataset.name, groups, dataset.weight)


def dataset_rows(dataset: ParallelDataset) -> Iterator[dict]:
    """The ``jsonl`` rows of ``dataset``: one per group and language, the group's conflict key as
    ``passage_id`` (the format holds one key per group; the adapters here give each group one)."""
    for group in dataset.groups:
        if len(group.keys) > 1:
            raise ValueError(f"group {group.id!r} has {len(group.keys)} conflict keys; the jsonl format keeps one")
        key = next(iter(group.keys), None)
        for language, entry in group.entries.items():
            row = {"group": group.id, "language": language, "question": entry.question,
                   "passage": entry.passage, "hard_negatives": list(entry.hard_negatives)}
            if key is not None:
                row["passage_id"] = key
            yield row


def write_dataset(dataset: ParallelDataset, out: str | Path) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in dataset_rows(dataset):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
