"""The hybrid-batch sampler obeys its rules: exactly for batch composition, statistically for the draws."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from trainer.data import Entry, Group, ParallelDataset
from trainer.sampler import HybridBatchSampler

LANGUAGES = ("en", "de", "fr", "es")


def make_dataset(name: str, groups: int, languages=LANGUAGES, shared_passage_every: int = 0,
                 negatives: bool = False) -> ParallelDataset:
    out = []
    for g in range(groups):
        entries = {
            lang: Entry(f"{name} q{g} {lang}", f"{name} p{g} {lang}",
                        tuple(f"{name} n{g}.{k} {lang}" for k in range(3)) if negatives else ())
            for lang in languages
        }
        keys = frozenset({f"passage:{g // shared_passage_every}"}) if shared_passage_every else frozenset()
        out.append(Group(f"{name}-{g}", entries, keys))
    return ParallelDataset(name, out)


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def batches(sampler: HybridBatchSampler, n: int):
    return [sampler.next_batch() for _ in range(n)]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_batch_composition_rules_hold_exactly(alpha):
    datasets = [make_dataset("a", 60), make_dataset("b", 40, languages=("en", "zh", "ar"), shared_passage_every=2)]
    sampler = HybridBatchSampler(datasets, batch_size=16, alpha=alpha, seed=1)
    for batch in batches(sampler, 300):
        assert len(batch.pairs) == 16
        if batch.kind == "mono":
            assert batch.language is not None
            assert all(p.query_language == p.passage_language == batch.language for p in batch.pairs)
        else:
            assert batch.language is None
            assert all(p.query_language != p.passage_language for p in batch.pairs)
        groups = [p.group for p in batch.pairs]
        assert len(set(groups)) == len(groups)
        assert all(g.startswith(batch.dataset + "-") for g in groups)
        dataset = next(d for d in datasets if d.name == batch.dataset)
        by_id = {g.id: g for g in dataset.groups}
        keys = [k for g in groups for k in by_id[g].conflict_keys]
        assert len(keys) == len(set(keys))  # no shared passage inside a batch
        for pair in batch.pairs:  # texts come from the right group and language
            entry_q, entry_p = by_id[pair.group].entries[pair.query_language], by_id[pair.group].entries[pair.passage_language]
            assert (pair.question, pair.passage) == (entry_q.question, entry_p.passage)
    kinds = {b.kind for b in batches(sampler, 50)}
    if alpha == 1.0:
        assert kinds == {"mono"}
    if alpha == 0.0:
        assert kinds == {"cross"}


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_alpha_is_the_probability_of_a_monolingual_batch(alpha):
    sampler = HybridBatchSampler([make_dataset("a", 40)], batch_size=8, alpha=alpha, seed=7)
    n = 3000
    mono = sum(b.kind == "mono" for b in batches(sampler, n))
    assert within_binomial(mono, n, alpha), (mono, n * alpha)


def test_datasets_are_drawn_in_proportion_to_size_or_weight():
    small, large = make_dataset("small", 100), make_dataset("large", 300)
    n = 3000
    counts = Counter(b.dataset for b in batches(HybridBatchSampler([small, large], 8, 0.5, seed=3), n))
    assert within_binomial(counts["large"], n, 0.75), counts
    small.weight, large.weight = 3.0, 1.0
    counts = Counter(b.dataset for b in batches(HybridBatchSampler([small, large], 8, 0.5, seed=3), n))
    assert within_binomial(counts["small"], n, 0.75), counts


def test_mono_languages_and_cross_pairs_are_uniform():
    sampler = HybridBatchSampler([make_dataset("a", 50)], batch_size=10, alpha=0.5, seed=11)
    drawn = batches(sampler, 2000)
    mono = [b for b in drawn if b.kind == "mono"]
    languages = Counter(b.language for b in mono)
    assert set(languages) == set(LANGUAGES)
    for count in languages.values():
        assert within_binomial(count, len(mono), 1 / len(LANGUAGES))
    pairs = Counter((p.query_language, p.passage_language) for b in drawn if b.kind == "cross" for p in b.pairs)
    total = sum(pairs.values())
    assert len(pairs) == len(LANGUAGES) * (len(LANGUAGES) - 1)
    for count in pairs.values():
        assert within_binomial(count, total, 1 / len(pairs))


def test_languages_too_small_for_a_batch_get_no_mono_batches():
    groups = [Group(f"g{i}", {"en": Entry("q", "p"), **({"sw": Entry("q", "p")} if i < 3 else {})})
              for i in range(20)]
    sampler = HybridBatchSampler([ParallelDataset("d", groups)], batch_size=8, alpha=1.0, seed=0)
    assert sampler.mono_languages == [["en"]]
    with pytest.raises(ValueError, match="cross-lingual"):
        HybridBatchSampler([ParallelDataset("d", groups)], batch_size=8, alpha=0.5)


def test_invalid_settings_are_rejected():
    data = [make_dataset("a", 10)]
    with pytest.raises(ValueError, match="alpha"):
        HybridBatchSampler(data, batch_size=4, alpha=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        HybridBatchSampler(data, batch_size=1)
    with pytest.raises(ValueError, match="monolingual"):
        HybridBatchSampler(data, batch_size=16, alpha=1.0)
    with pytest.raises(RuntimeError, match="non-conflicting"):
        HybridBatchSampler([make_dataset("s", 20, shared_passage_every=4)], batch_size=8, alpha=1.0).next_batch()


def test_same_seed_same_batches_and_state_resumes_exactly():
    data = [make_dataset("a", 30), make_dataset("b", 30)]
    first, second = HybridBatchSampler(data, 8, seed=5), HybridBatchSampler(data, 8, seed=5)
    assert batches(first, 20) == batches(second, 20)
    state = first.state_dict()
    expected = batches(first, 10)
    resumed = HybridBatchSampler(data, 8, seed=999)
    resumed.load_state_dict(state)
    assert batches(resumed, 10) == expected
    assert batches(HybridBatchSampler(data, 8, seed=6), 5) != batches(HybridBatchSampler(data, 8, seed=5), 5)


def test_shards_partition_the_batch():
    batch = HybridBatchSampler([make_dataset("a", 30)], 12, seed=0).next_batch()
    shards = [batch.shard(rank, 3) for rank in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert sum(shards, ()) == batch.pairs


def test_hard_negatives_come_from_the_passage_language():
    sampler = HybridBatchSampler([make_dataset("a", 30, negatives=True)], 8, alpha=0.0, seed=2, hard_negatives=2)
    for batch in batches(sampler, 20):
        for pair in batch.pairs:
            assert len(pair.hard_negatives) == 2 == len(set(pair.hard_negatives))
            index = pair.group.split("-")[1]
            assert all(n.startswith(f"a n{index}.") and n.endswith(pair.passage_language) for n in pair.hard_negatives)
    assert all(p.hard_negatives == () for p in HybridBatchSampler([make_dataset("a", 30, negatives=True)], 8).next_batch().pairs)
