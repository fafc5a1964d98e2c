"""Tiny training data written by the trainer tests: parallel JSONL, an XQuAD-R-format directory, NTREX, squad2-fi."""
from __future__ import annotations

import json
from pathlib import Path

WORDS = {
    "en": ["the", "quick", "brown", "fox", "water", "boils", "dog", "lazy"],
    "de": ["der", "schnelle", "braune", "fuchs", "wasser", "kocht", "hund", "faulen"],
    "fr": ["le", "renard", "brun", "rapide", "eau", "bout", "chien", "paresseux"],
}


def _text(language: str, seed: int, length: int) -> str:
    words = WORDS[language]
    return " ".join(words[(seed * 7 + i * (seed % 5 + 1)) % len(words)] for i in range(length)) + f" {seed}."


def write_parallel_jsonl(path: Path, groups: int = 40, languages=("en", "de", "fr"), hard_negatives: bool = False,
                         missing_every: int = 0) -> Path:
    """``groups`` groups in ``languages``; with ``missing_every`` every n-th group lacks its last language."""
    rows = []
    for g in range(groups):
        for li, language in enumerate(languages):
            if missing_every and g % missing_every == 0 and li == len(languages) - 1:
                continue
            row = {"group": f"g{g}", "language": language, "question": _text(language, g, 4),
                   "passage": _text(language, g + 1000, 9)}
            if hard_negatives and g % 2 == 0:
                row["hard_negatives"] = [_text(language, g + 2000 + k, 9) for k in range(1 + g % 3)]
            rows.append(row)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_squad_dir(directory: Path, languages=("en", "de"), articles: int = 6, paragraphs: int = 2,
                    sentences: int = 3) -> dict[int, list[str]]:
    """XQuAD-R layout: ``<lang>.json`` with sentences/sentence_breaks + ``split.json`` (even articles = train).

    Each paragraph has one question per sentence, plus a second question on sentence 0 (two questions
    sharing an answer sentence). Returns question ids per article.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ids: dict[int, list[str]] = {a: [] for a in range(articles)}
    for language in languages:
        data = []
        for a in range(articles):
            paras = []
            for p in range(paragraphs):
                texts = [_text(language, a * 100 + p * 10 + s, 6 + s) for s in range(sentences)]
                context, breaks = "", []
                for text in texts:
                    start = len(context) + (1 if context else 0)
                    context = f"{context} {text}" if context else text
                    breaks.append([start, start + len(text)])
                qas = []
                for q, s in enumerate(list(range(sentences)) + [0]):
                    qid = f"a{a}p{p}q{q}"
                    answer_start = breaks[s][0] + 2
                    qas.append({"id": qid, "question": f"{language} question {qid}?",
                                "answers": [{"answer_start": answer_start, "text": context[answer_start:answer_start + 3]}]})
                    if language == languages[0]:
                        ids[a].append(qid)
                paras.append({"context": context, "sentences": texts, "sentence_breaks": breaks, "qas": qas})
            data.append({"title": f"article {a}", "paragraphs": paras})
        (directory / f"{language}.json").write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    train = [a for a in range(articles) if a % 2 == 0]
    test = [a for a in range(articles) if a % 2 == 1]
    split = {"rule": "even = train", "train_articles": train, "test_articles": test,
             "train_question_ids": [q for a in train for q in ids[a]],
             "test_question_ids": [q for a in test for q in ids[a]]}
    (directory / "split.json").write_text(json.dumps(split), encoding="utf-8")
    return ids


def write_ntrex_dir(directory: Path, documents=(4, 2, 5)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc_ids = [f"doc{d}" for d, size in enumerate(documents) for _ in range(size)]
    (directory / "DOCUMENT_IDS.tsv").write_text("\n".join(doc_ids) + "\n", encoding="utf-8")
    for code, language in (("eng-US", "en"), ("deu", "de")):
        lines = [_text(language, i, 5) for i in range(len(doc_ids))]
        (directory / f"newstest2019-ref.{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def write_squad2_fi(path: Path, paragraphs: int = 3) -> Path:
    rows = []
    for p in range(paragraphs):
        rows.append({"doc": p // 2, "para": p % 2,
                     "context": {"en_bt": _text("en", p, 12), "fi": f"suomeksi kappale {p}."},
                     "questions": [{"en_bt": f"question {p}-{q}?", "fi": f"kysymys {p}-{q}?"} for q in range(2)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
