"""The LAReQA protocol (Roy et al. 2020) on XQuAD-R and any data in its format (MLQA-R, ...). Torch-free.

Data: one SQuAD-format ``<language>.json`` per language whose paragraphs carry ``sentences`` and
``sentence_breaks``; question ids are shared across languages. Candidates are the sentences; a question's
relevant candidate in language L is the sentence of L's paragraph holding L's ``answer_start``.

Settings, all from one scoring pass over the pooled candidates:

- monolingual X→X: queries in X against X's candidates (mAP, averaged over languages);
- cross-lingual X→Y: queries in X against Y's candidates, Y ≠ X (mAP macro-averaged over the settings);
- multilingual X→pool: queries against every language's candidates, every parallel answer relevant;
- R@1 / R@10: for mono and cross the share of queries whose answer is in the top k (one relevant);
  for multilingual the share of a query's relevant candidates in the top k;
- rank distance: per query, max − min rank of its parallel answers in the pooled ranking, averaged per
  query language, then over languages (``evaluation.metrics.rank_distance``).
"""
from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from evaluation import metrics
from evaluation.cache import cached_encode

SPLIT_FILE = "split.json"
SPLITS = ("all", "train", "test")
RECALL_KS = (1, 10)


# ------------------------------------------------------------------------------------- the format


@dataclass(frozen=True)
class SquadSplit:
    """``split.json`` of XQuAD-R: article positions and question ids of the train and test halves."""

    train_articles: tuple[int, ...]
    test_articles: tuple[int, ...]
    train_ids: frozenset[str]
    test_ids: frozenset[str]

    @classmethod
    def load(cls, path: str | Path) -> "SquadSplit":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        split = cls(
            tuple(data["train_articles"]), tuple(data["test_articles"]),
            frozenset(data["train_question_ids"]), frozenset(data["test_question_ids"]),
        )
        if split.train_ids & split.test_ids or set(split.train_articles) & set(split.test_articles):
            raise ValueError(f"{path}: train and test halves overlap")
        return split

    def articles(self, name: str) -> tuple[int, ...]:
        return {"train": self.train_articles, "test": self.test_articles}[name]

    def dev_articles(self, count: int) -> tuple[int, ...]:
        """``count`` train articles spread evenly over the train half, held out for early stopping."""
        if count <= 0:
            return ()
        if count >= len(self.train_articles):
            raise ValueError(f"cannot hold out {count} of {len(self.train_articles)} train articles for dev")
        step = len(self.train_articles) / count
        return tuple(self.train_articles[int(step * i + step / 2)] for i in range(count))


def squad_files(directory: str | Path) -> dict[str, Path]:
    """``{language: path}`` for the one-file-per-language layout (``en.json``, ``de.json``, ...)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a directory: {directory}")
    files = {p.stem: p for p in sorted(directory.glob("*.json")) if p.name != SPLIT_FILE}
    if not files:
        raise FileNotFoundError(f"{directory}: no SQuAD-format <language>.json files")
    return files


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    article: int
    paragraph: int
    question: str
    sentence: int  # index of the sentence that holds the answer
    sentences: tuple[str, ...]  # all sentences of the paragraph


def read_squad_sentences(path: str | Path, data: dict | None = None) -> list[SquadQuestion]:
    """Answerable questions of one SQuAD-format file whose paragraphs carry ``sentences``/``sentence_breaks``
    (``data``: the file already parsed)."""
    path = Path(path)
    data = data if data is not None else json.loads(path.read_text(encoding="utf-8"))
    questions = []
    for article_index, article in enumerate(data["data"]):
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            if "sentences" not in paragraph or "sentence_breaks" not in paragraph:
                raise ValueError(
                    f"{path}: article {article_index} paragraph {paragraph_index} has no 'sentences'/'sentence_breaks' "
                    "(LAReQA format needed)"
                )
            sentences = tuple(paragraph["sentences"])
            starts = [start for start, _ in paragraph["sentence_breaks"]]
            for qa in paragraph["qas"]:
                if not qa.get("answers"):
                    continue  # unanswerable: no relevant sentence
                answer_start = qa["answers"][0]["answer_start"]
                sentence = max(bisect.bisect_right(starts, answer_start) - 1, 0)
                questions.append(
                    SquadQuestion(qa["id"], article_index, paragraph_index, qa["question"], sentence, sentences)
                )
    return questions


def paragraph_sentences(data: dict) -> list[tuple[int, int, tuple[str, ...]]]:
    """``(article, paragraph, sentences)`` for every paragraph of a parsed file (the candidate pool)."""
    return [
        (a, p, tuple(paragraph.get("sentences", ())))
        for a, article in enumerate(data["data"])
        for p, paragraph in enumerate(article["paragraphs"])
    ]


# ------------------------------------------------------------------------------------------ the set


@dataclass
class LareqaSet:
    languages: list[str]
    candidates: list[str]  # grouped contiguously by language, in ``languages`` order
    candidate_language: list[str]
    queries: list[str]
    query_language: list[str]
    query_id: list[str]
    relevant: list[dict[str, int]]  # per query: {language: candidate index of that language's answer}

    @property
    def segment_starts(self) -> list[int]:
        starts, seen = [], set()
        for index, language in enumerate(self.candidate_language):
            if language not in seen:
                seen.add(language)
                starts.append(index)
        return starts

    def summary(self) -> str:
        return (f"{len(self.queries)} queries, {len(self.candidates)} candidates, "
                f"{len(self.languages)} languages ({' '.join(self.languages)})")


def load_lareqa(
    directory: str | Path,
    split: str = "all",
    articles: Iterable[int] | None = None,
    languages: Sequence[str] | None = None,
) -> LareqaSet:
    """Load a LAReQA-format directory. ``split`` train/test reads ``split.json``'s articles; ``articles``
    selects article positions explicitly (the trainer's dev hold-out); ``languages`` restricts languages."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    files = squad_files(directory)
    if languages is not None:
        unknown = sorted(set(languages) - set(files))
        if unknown:
            raise ValueError(f"{directory}: no data for language(s) {unknown}; it has {sorted(files)}")
        files = {language: files[language] for language in languages}
    wanted: set[int] | None = None
    if split != "all":
        split_path = Path(directory) / SPLIT_FILE
        if not split_path.is_file():
            raise FileNotFoundError(f"--split {split} needs {split_path}")
        wanted = set(SquadSplit.load(split_path).articles(split))
    if articles is not None:
        wanted = set(articles) if wanted is None else wanted & set(articles)

    data = LareqaSet(sorted(files), [], [], [], [], [], [])
    sentence_index: dict[tuple[str, int, int, int], int] = {}
    questions: dict[str, list[SquadQuestion]] = {}
    for language in data.languages:
        parsed = json.loads(files[language].read_text(encoding="utf-8"))
        for article, paragraph, sentences in paragraph_sentences(parsed):
            if wanted is not None and article not in wanted:
                continue
            for s, sentence in enumerate(sentences):
                sentence_index[(language, article, paragraph, s)] = len(data.candidates)
                data.candidates.append(sentence)
                data.candidate_language.append(language)
        questions[language] = [q for q in read_squad_sentences(files[language], parsed)
                               if wanted is None or q.article in wanted]

    answers: dict[str, dict[str, int]] = defaultdict(dict)
    for language, items in questions.items():
        for q in items:
            answers[q.id][language] = sentence_index[(language, q.article, q.paragraph, q.sentence)]
    for language, items in questions.items():
        for q in items:
            data.queries.append(q.question)
            data.query_language.append(language)
            data.query_id.append(q.id)
            data.relevant.append(answers[q.id])
    if not data.queries:
        raise ValueError(f"{directory}: no questions selected (split={split}, articles={articles})")
    return data


# -------------------------------------------------------------------------------------- the metrics


def lareqa_metrics(query_vectors: np.ndarray, candidate_vectors: np.ndarray, data: LareqaSet,
                   per_query: bool = False) -> dict:
    """Every LAReQA figure from embeddings (rows aligned with ``data.queries`` / ``data.candidates``).

    ``per_query``: also return, under ``"per_query"``, one row per query with the ranks every figure is
    computed from (``query_rows``; what ``python -m evaluation compare`` tests differences on)."""
    languages = data.languages
    relevant_languages = [sorted(r) for r in data.relevant]
    relevant = [[r[language] for language in langs] for r, langs in zip(data.relevant, relevant_languages)]
    ranks = metrics.ranks_in_pool_and_segment(query_vectors, candidate_vectors, relevant, data.segment_starts)

    # per (query language, candidate language): reciprocal ranks and hits of the single answer
    setting: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    multi_ap, multi_recall, distances = [], {k: [] for k in RECALL_KS}, []
    for query_language, langs, (pool, within) in zip(data.query_language, relevant_languages, ranks):
        for candidate_language, rank in zip(langs, within):
            cell = setting[(query_language, candidate_language)]
            cell["ap"].append(metrics.average_precision([rank]))
            for k in RECALL_KS:
                cell[f"r@{k}"].append(metrics.hit_at_k([rank], k))
        multi_ap.append(metrics.average_precision(pool))
        for k in RECALL_KS:
            multi_recall[k].append(metrics.recall_at_k(pool, k))
        distances.append(metrics.rank_distance(pool))

    def settings_mean(cross: bool, key: str) -> float:
        return metrics.mean(metrics.mean(cell[key]) for (x, y), cell in setting.items() if (x != y) == cross)

    rank_distance, rank_distance_by_language = metrics.macro_by_language(distances, data.query_language)
    multi_map, multi_by_language = metrics.macro_by_language(multi_ap, data.query_language)
    result = {
        "mono_map": settings_mean(False, "ap"),
        "cross_map": settings_mean(True, "ap"),
        "multilingual_map": multi_map,
        "rank_distance": rank_distance,
    }
    for k in RECALL_KS:
        result[f"mono_r@{k}"] = settings_mean(False, f"r@{k}")
        result[f"cross_r@{k}"] = settings_mean(True, f"r@{k}")
        result[f"multilingual_r@{k}"] = metrics.macro_by_language(multi_recall[k], data.query_language)[0]
    result["per_language"] = {
        language: {
            "mono_map": metrics.mean(setting[(language, language)]["ap"]),
            "cross_map_as_query": metrics.mean(
                metrics.mean(setting[(language, y)]["ap"]) for y in languages if y != language and (language, y) in setting
            ),
            "multilingual_map": multi_by_language.get(language, 0.0),
            "rank_distance": rank_distance_by_language.get(language, 0.0),
        }
        for language in languages
    }
    result["cross_matrix"] = {
        x: {y: metrics.mean(setting[(x, y)]["ap"]) for y in languages if (x, y) in setting} for x in languages
    }
    result.update(n_queries=len(data.queries), n_candidates=len(data.candidates), languages=languages)
    if per_query:
        result["per_query"] = query_rows(data, relevant_languages, ranks)
    return result


def query_rows(data: LareqaSet, relevant_languages: Sequence[Sequence[str]], ranks) -> list[dict]:
    """Per query: its question id, language, and each relevant candidate's rank in the pooled ranking
    (``pool_rank``) and within its own language (``language_rank``), keyed by candidate language. Every
    LAReQA figure is a function of these ranks (``evaluation.significance``), so they reproduce the
    report exactly; integers keep the file small and lossless."""
    return [
        {"id": qid, "language": language,
         "pool_rank": {y: int(r) for y, r in zip(langs, pool)},
         "language_rank": {y: int(r) for y, r in zip(langs, within)}}
        for qid, language, langs, (pool, within) in zip(data.query_id, data.query_language, relevant_languages, ranks)
    ]


def evaluate_lareqa(encoder, data: LareqaSet, cache_dir: str | Path | None = None, progress: bool = False,
                    batch_size: int | None = None, calibration: str = "none", statistics=None,
                    query_languages: Sequence[str | None] | None = None, per_query: bool = False) -> dict:
    """Embed ``data`` with ``encoder`` (``.encode(texts, kind)``; through the embedding cache when
    ``cache_dir`` is given) and compute ``lareqa_metrics``.

    ``calibration``: a method of ``encoder.calibration``, applied as the service applies it: the passage
    means of the candidates themselves (the collection) where a language has enough of them, else the
    artifact's ``statistics``; ``query_languages`` (default: the given ones) may hold detected codes or
    None (unsure), and such queries fall back to the method that needs no query language.
    ``per_query``: see ``lareqa_metrics``."""
    queries = cached_encode(encoder, data.queries, "query", cache_dir, progress, batch_size)
    candidates = cached_encode(encoder, data.candidates, "passage", cache_dir, progress, batch_size)
    if calibration == "none":
        return lareqa_metrics(queries, candidates, data, per_query)
    from encoder.calibration import LanguageStatistics, calibrate_for_evaluation

    languages = np.asarray(data.candidate_language)
    collection = LanguageStatistics.from_vectors(
        {language: candidates[languages == language] for language in data.languages}, dim=candidates.shape[1])
    query_languages = list(data.query_language if query_languages is None else query_languages)
    queries, candidates, info = calibrate_for_evaluation(
        calibration, queries, query_languages, candidates, data.candidate_language, statistics, collection)
    result = lareqa_metrics(queries, candidates, data, per_query)
    result["calibration"] = info | {"query_languages": "given" if query_languages == data.query_language else "detected"}
    return result
