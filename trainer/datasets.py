"""The config's ``datasets:`` list read with the adapters of ``trainer.data``, the dev articles held out."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from trainer.config import DatasetConfig, TrainConfig
from trainer.data import ParallelDataset, load_jsonl, load_ntrex, load_squad2_fi, load_squad_sentences
from trainer.dev import DevSplit


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def load_dataset(spec: DatasetConfig, exclude_articles: Iterable[int] = ()) -> ParallelDataset:
    """One ``datasets:`` entry through its adapter (``exclude_articles``: XQuAD-R-format articles held out)."""
    path = Path(spec.path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec.name or spec.path}: {path} does not exist")
    if spec.format == "jsonl":
        dataset = load_jsonl(path, spec.name)
    elif spec.format == "squad":
        dataset = load_squad_sentences(path, spec.name, exclude_articles=exclude_articles,
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
    return dataset


def load_datasets(config: TrainConfig, dev: DevSplit | None = None) -> list[ParallelDataset]:
    """Every configured dataset; the dev articles are held out of an XQuAD-R-format dataset they belong to.

    Raises ``ValueError`` naming the dataset when its groups include test-half or dev questions (they are the
    reported evaluation and the early-stopping signal)."""
    datasets = []
    for i, spec in enumerate(config.datasets):
        where = f"datasets[{i}] ({spec.name or spec.path})"
        exclude = dev.articles if dev and spec.format == "squad" and _same_path(spec.path, config.dev.path) else ()
        datasets.append((where, load_dataset(spec, exclude)))
    if dev is not None:
        dev_ids = set(dev.data.query_id)
        for where, dataset in datasets:
            ids = {g.id for g in dataset.groups}
            # Test-half questions are the reported evaluation; dev questions decide early stopping.
            for name, held_out in (("test-half", dev.split.test_ids), ("dev", dev_ids)):
                leaked = ids & held_out
                if leaked:
                    raise ValueError(f"{where}: {len(leaked)} {name} questions of dev.path {config.dev.path} in "
                                     f"the training data, e.g. {sorted(leaked)[:3]}")
    return [dataset for _, dataset in datasets]
