"""Training-data adapters: parallel JSONL, SQuAD/LAReQA sentences (split-aware), squad2-fi, NTREX-128."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer_fixtures import write_ntrex_dir, write_parallel_jsonl, write_squad2_fi, write_squad_dir
from trainer.data import (
    SquadSplit, load_jsonl, load_ntrex, load_squad2_fi, load_squad_sentences, passage_spans, read_squad_sentences,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_jsonl_groups_languages_and_hard_negatives(tmp_path):
    path = write_parallel_jsonl(tmp_path / "par.jsonl", groups=6, hard_negatives=True, missing_every=3)
    dataset = load_jsonl(path)
    assert dataset.name == "par" and len(dataset.groups) == 6
    assert dataset.languages == ["de", "en", "fr"]
    assert len(dataset.by_language["fr"]) == 4 and len(dataset.by_language["en"]) == 6
    group = dataset.groups[2]
    assert group.id == "g2" and set(group.entries) == {"en", "de", "fr"}
    assert len(group.entries["de"].hard_negatives) == 3 and dataset.groups[1].entries["en"].hard_negatives == ()
    assert "group:g2" in group.conflict_keys


def test_jsonl_passage_id_becomes_a_conflict_key(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"group": g, "language": "en", "question": f"q{g}", "passage": "shared", "passage_id": 7} for g in "ab"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_jsonl(path).groups
    assert a.conflict_keys & b.conflict_keys == {"passage:7"}


@pytest.mark.parametrize("line, message", [
    ('{"group": "g", "language": "en", "question": "q"}', "missing or empty field 'passage'"),
    ('not json', "not valid JSON"),
    ('{"group": "g", "language": "en", "question": "q", "passage": "p", "hard_negatives": "x"}', "hard_negatives"),
])
def test_jsonl_bad_rows_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"group": "ok", "language": "en", "question": "q", "passage": "p"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{message}"):
        load_jsonl(path)


def test_jsonl_duplicate_language_in_group(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = json.dumps({"group": "g", "language": "en", "question": "q", "passage": "p"})
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(ValueError, match="already has language 'en'"):
        load_jsonl(path)


def test_squad_sentences_relevant_sentence_holds_the_answer(tmp_path):
    write_squad_dir(tmp_path / "x", languages=("en",), articles=2)
    questions = {q.id: q for q in read_squad_sentences(tmp_path / "x" / "en.json")}
    data = json.loads((tmp_path / "x" / "en.json").read_text())
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                q = questions[qa["id"]]
                start, end = paragraph["sentence_breaks"][q.sentence]
                assert start <= qa["answers"][0]["answer_start"] < end
    assert questions["a0p0q3"].sentence == questions["a0p0q0"].sentence == 0


def test_squad_adapter_trains_on_train_articles_only(tmp_path):
    ids = write_squad_dir(tmp_path / "x", languages=("en", "de"), articles=6)
    dataset = load_squad_sentences(tmp_path / "x")
    loaded = {g.id for g in dataset.groups}
    assert loaded == {q for a in (0, 2, 4) for q in ids[a]}
    assert dataset.languages == ["de", "en"]
    group = next(g for g in dataset.groups if g.id == "a2p1q1")
    assert group.entries["de"].passage.endswith(f"{2 * 100 + 10 + 1}.")  # sentence 1 of paragraph 1, article 2
    assert group.entries["de"].question == "de question a2p1q1?"
    # Two questions answered by the same sentence conflict; others do not.
    by_id = {g.id: g for g in dataset.groups}
    assert by_id["a0p0q0"].conflict_keys & by_id["a0p0q3"].conflict_keys
    assert not by_id["a0p0q0"].conflict_keys & by_id["a0p0q1"].conflict_keys


def test_squad_adapter_holds_out_dev_articles_and_adds_paragraph_negatives(tmp_path):
    ids = write_squad_dir(tmp_path / "x", articles=6)
    split = SquadSplit.load(tmp_path / "x" / "split.json")
    assert split.dev_articles(1) == (2,)
    dataset = load_squad_sentences(tmp_path / "x", exclude_articles=split.dev_articles(1), paragraph_negatives=True)
    assert {g.id for g in dataset.groups} == {q for a in (0, 4) for q in ids[a]}
    entry = next(g for g in dataset.groups if g.id == "a0p0q1").entries["en"]
    assert len(entry.hard_negatives) == 2 and entry.passage not in entry.hard_negatives
    with pytest.raises(ValueError, match="hold out"):
        split.dev_articles(3)


def test_squad_adapter_asserts_no_test_question_reaches_training(tmp_path):
    ids = write_squad_dir(tmp_path / "x", articles=4)
    split_path = tmp_path / "x" / "split.json"
    split = json.loads(split_path.read_text())
    split["test_question_ids"].append(ids[0][0])  # a question of a train article declared test: must be caught
    split["train_question_ids"].remove(ids[0][0])
    split_path.write_text(json.dumps(split))
    with pytest.raises(AssertionError, match="test-half questions"):
        load_squad_sentences(tmp_path / "x")


def test_squad_adapter_without_split_and_from_a_mapping(tmp_path):
    ids = write_squad_dir(tmp_path / "x", languages=("en", "fr"), articles=2)
    dataset = load_squad_sentences({"en": tmp_path / "x" / "en.json", "fr": tmp_path / "x" / "fr.json"}, name="m")
    assert dataset.name == "m" and len(dataset.groups) == len(ids[0]) + len(ids[1])
    bad = tmp_path / "plain.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": []}]}]}))
    with pytest.raises(ValueError, match="sentence_breaks"):
        read_squad_sentences(bad)


def test_passage_spans_stay_inside_documents():
    docs = ["a"] * 4 + ["b"] * 2 + ["c"] * 7 + ["d"]
    assert passage_spans(docs, 3) == [(0, 4), (4, 6), (6, 9), (9, 13), (13, 14)]
    assert passage_spans(docs, 1) == [(i, i + 1) for i in range(14)]


def test_ntrex_adapter_on_fixture(tmp_path):
    dataset = load_ntrex(write_ntrex_dir(tmp_path / "n", documents=(4, 2, 5)), sentences_per_passage=3)
    assert dataset.languages == ["de", "en"] and len(dataset.groups) == 11
    for group in dataset.groups:
        for entry in group.entries.values():
            assert entry.question in entry.passage  # sentence-to-passage alignment
    first, fourth, fifth = dataset.groups[0], dataset.groups[3], dataset.groups[4]
    assert first.keys == fourth.keys  # doc0 (4 sentences) is one passage: the 1-sentence tail joined it
    assert not first.keys & fifth.keys


def test_squad2_fi_adapter_on_fixture(tmp_path):
    dataset = load_squad2_fi(write_squad2_fi(tmp_path / "s.jsonl", paragraphs=3))
    assert dataset.languages == ["en", "fi"] and len(dataset.groups) == 6
    a, b, c = dataset.groups[:3]
    assert a.entries["fi"].question == "kysymys 0-0?" and a.entries["fi"].passage == "suomeksi kappale 0."
    assert a.keys == b.keys and not a.keys & c.keys  # paragraph-level positives conflict
    assert len(load_squad2_fi(tmp_path / "s.jsonl", max_paragraphs=1).groups) == 2


def test_restrict_languages_and_limit(tmp_path):
    dataset = load_jsonl(write_parallel_jsonl(tmp_path / "p.jsonl", groups=5))
    assert dataset.restrict_languages(["en"]).languages == ["en"]
    assert len(dataset.limit(2).groups) == 2
    with pytest.raises(ValueError, match="no language"):
        dataset.restrict_languages(["xx"])


# ------------------------------------------------------------------------- the shared data (if present)


@pytest.mark.skipif(not (SHARED_DATA / "xquad-r" / "split.json").is_file(), reason="shared XQuAD-R absent")
def test_real_xquad_r_train_half():
    split = SquadSplit.load(SHARED_DATA / "xquad-r" / "split.json")
    dataset = load_squad_sentences(SHARED_DATA / "xquad-r")
    assert len(dataset.groups) == 612 and len(dataset.languages) == 11
    assert {g.id for g in dataset.groups} == split.train_ids
    assert all(len(g.entries) == 11 for g in dataset.groups)
    held_out = load_squad_sentences(SHARED_DATA / "xquad-r", exclude_articles=split.dev_articles(4))
    assert 450 < len(held_out.groups) < 612


@pytest.mark.skipif(not (SHARED_DATA / "train" / "ntrex128").is_dir(), reason="shared NTREX-128 absent")
def test_real_ntrex():
    dataset = load_ntrex(SHARED_DATA / "train" / "ntrex128")
    assert len(dataset.groups) == 1997 and len(dataset.languages) == 11
    assert len(dataset.multilingual) == 1997


@pytest.mark.skipif(not (SHARED_DATA / "train" / "squad2-fi").is_dir(), reason="shared squad2-fi absent")
def test_real_squad2_fi_head():
    path = next((SHARED_DATA / "train" / "squad2-fi").glob("*.jsonl"))
    dataset = load_squad2_fi(path, max_paragraphs=20)
    assert dataset.languages == ["en", "fi"] and len(dataset.groups) > 20
