"""Hard-negative mining (``trainer.mining``, ``python -m trainer mine``): what a negative may be, the jsonl
round trip the trainer reads, and the CLI's errors."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from tests.trainer_fixtures import write_ntrex_dir, write_squad2_fi
from trainer.__main__ import main as trainer_main
from trainer.data import Entry, Group, ParallelDataset, load_jsonl, load_ntrex, load_squad2_fi
from trainer.mining import MiningSettings, mine_dataset, write_dataset
from trainer.sampler import HybridBatchSampler


class BagOfWordsEncoder:
    """Hashed word counts: texts that share words are near, so the ranking is known in advance."""
    precision, dim, fingerprint = "test", 256, "bag-of-words"

    def encode(self, texts, kind):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _dataset() -> ParallelDataset:
    """Four one-language groups; g0's question shares words with p1 most, then p2, then p3."""
    passages = ["alpha beta", "alpha beta gamma delta", "alpha gamma zeta", "omega psi chi"]
    questions = ["alpha beta gamma delta?", "x", "y", "z"]
    groups = [Group(f"g{i}", {"en": Entry(questions[i], passages[i])}, frozenset({f"p{i}"})) for i in range(4)]
    return ParallelDataset("toy", groups)


def test_negatives_are_the_best_ranked_passages_that_are_not_the_answer():
    mined = mine_dataset(_dataset(), BagOfWordsEncoder(), MiningSettings(negatives=2))
    assert mined.groups[0].entries["en"].hard_negatives == ("alpha beta gamma delta", "alpha gamma zeta")
    assert mined.groups[0].entries["en"].passage == "alpha beta"  # the pair itself is kept
    skipped = mine_dataset(_dataset(), BagOfWordsEncoder(), MiningSettings(negatives=2, skip=1))
    assert skipped.groups[0].entries["en"].hard_negatives == ("alpha gamma zeta", "omega psi chi")


def test_a_passage_that_answers_a_conflicting_group_is_never_a_negative(tmp_path):
    # squad2-fi: the questions of one paragraph share its key, so none gets that paragraph as a negative.
    dataset = load_squad2_fi(write_squad2_fi(tmp_path / "fi.jsonl", paragraphs=6))
    mined = mine_dataset(dataset, BagOfWordsEncoder(), MiningSettings(negatives=3))
    for group in mined.groups:
        for language, entry in group.entries.items():
            assert len(entry.hard_negatives) == 3 and entry.passage not in entry.hard_negatives
            answered = {g.entries[language].passage for g in mined.groups
                        if g.conflict_keys & group.conflict_keys and language in g.entries}
            assert not answered & set(entry.hard_negatives)


def test_mined_dataset_round_trips_through_the_jsonl_format_the_trainer_reads(tmp_path):
    dataset = load_ntrex(write_ntrex_dir(tmp_path / "ntrex"))
    mined = mine_dataset(dataset, BagOfWordsEncoder(), MiningSettings(negatives=2))
    loaded = load_jsonl(write_dataset(mined, tmp_path / "mined.jsonl"), "ntrex128")
    assert [g.id for g in loaded.groups] == [g.id for g in mined.groups]
    for before, after in zip(mined.groups, loaded.groups):
        assert dict(after.entries) == dict(before.entries)
    # Sentences of one passage still conflict (their passage would be a false negative for each other).
    same_passage = [g for g in loaded.groups if g.id in ("line0", "line1")]
    assert same_passage[0].conflict_keys & same_passage[1].conflict_keys
    pairs = HybridBatchSampler([loaded], batch_size=2, alpha=0.5, seed=0, hard_negatives=1).next_batch().pairs
    assert all(len(pair.hard_negatives) == 1 and pair.hard_negatives[0] != pair.passage for pair in pairs)


@pytest.mark.parametrize("extra, message", [
    (["--negatives", "0"], "--negatives must be >= 1"),
    (["--skip", "-1"], "--skip must be >= 0"),
    (["--max-groups", "0"], "max_groups must be >= 1"),
])
def test_cli_names_the_bad_argument(tmp_path, capsys, extra, message):
    ntrex = write_ntrex_dir(tmp_path / "ntrex")
    code = trainer_main(["mine", "--format", "ntrex", "--path", str(ntrex), "--model", str(tmp_path / "none"),
                         "--out", str(tmp_path / "out.jsonl"), *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_mines_with_a_model_artifact(tmp_path, tiny_artifact, capsys):
    ntrex = write_ntrex_dir(tmp_path / "ntrex")
    missing = trainer_main(["mine", "--format", "ntrex", "--path", str(tmp_path / "absent"),
                            "--model", str(tiny_artifact), "--out", str(tmp_path / "x.jsonl")])
    assert missing == 2 and "does not exist" in capsys.readouterr().err
    out = tmp_path / "mined.jsonl"
    assert trainer_main(["mine", "--format", "ntrex", "--path", str(ntrex), "--model", str(tiny_artifact),
                         "--precision", "fp32", "--negatives", "2", "--out", str(out)]) == 0
    dataset = load_jsonl(out)
    assert all(len(entry.hard_negatives) == 2 for group in dataset.groups for entry in group.entries.values())
