"""Parallel question–passage training data: one *group* = the same question and its relevant passage in
several languages.

Every adapter returns a ``ParallelDataset``. A group also carries *conflict keys*: two groups that share
a key (the same question, or the same passage in any language) are never put in one batch, because the
passage of one would be a false negative for the other. Adapters:

- ``load_jsonl``: rows ``{"group", "language", "question", "passage", "hard_negatives"?, "passage_id"?}``.
- ``load_squad_sentences``: SQuAD-format files with ``sentences``/``sentence_breaks`` (LAReQA / XQuAD-R):
  one file per language, question ids shared across languages; the relevant passage is the sentence that
  holds the answer. A ``split.json`` beside the files restricts training to the ``train`` articles.
- ``load_squad2_fi``: TurkuNLP squad2-fi paragraphs (back-translated English + Finnish, paragraph positives).
- ``load_ntrex``: NTREX-128 news sentences in 11 languages. Passages are runs of neighbouring sentences of
  one document and the "question" is one of those sentences: a *sentence-to-passage alignment* task, not
  QA. Its value is cross-lingual batches in every evaluation language.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

# The LAReQA format is the evaluator's: the trainer reads it with the same code.
from evaluation.jsonl import read_jsonl_rows
from evaluation.lareqa import SPLIT_FILE, SquadSplit, read_squad_sentences, squad_files


@dataclass(frozen=True)
class Entry:
    question: str
    passage: str
    hard_negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    id: str
    entries: Mapping[str, Entry]  # language -> entry
    keys: frozenset[str] = frozenset()  # conflict keys besides the id itself

    @property
    def conflict_keys(self) -> frozenset[str]:
        return self.keys | {f"group:{self.id}"}


@dataclass
class ParallelDataset:
    name: str
    groups: list[Group]
    weight: float | None = None  # sampling weight; None = proportional to the number of groups
    by_language: dict[str, list[int]] = field(init=False, repr=False)
    multilingual: list[int] = field(init=False, repr=False)  # groups with at least two languages

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError(f"dataset {self.name!r} has no groups")
        seen: set[str] = set()
        self.by_language = defaultdict(list)
        self.multilingual = []
        for index, group in enumerate(self.groups):
            if group.id in seen:
                raise ValueError(f"dataset {self.name!r}: group id {group.id!r} appears twice")
            seen.add(group.id)
            for language in group.entries:
                self.by_language[language].append(index)
            if len(group.entries) >= 2:
                self.multilingual.append(index)
        self.by_language = dict(sorted(self.by_language.items()))

    @property
    def languages(self) -> list[str]:
        return list(self.by_language)

    @property
    def size(self) -> float:
        return float(self.weight) if self.weight is not None else float(len(self.groups))

    def restrict_languages(self, languages: Iterable[str]) -> "ParallelDataset":
        keep = set(languages)
        unknown = keep - set(self.languages)
        if unknown:
            raise ValueError(f"dataset {self.name!r} has no language(s) {sorted(unknown)}; it has {self.languages}")
        groups = [
            Group(g.id, {lang: e for lang, e in g.entries.items() if lang in keep}, g.keys)
            for g in self.groups
            if keep & set(g.entries)
        ]
        return ParallelDataset(self.name, groups, self.weight)

    def limit(self, max_groups: int) -> "ParallelDataset":
        return ParallelDataset(self.name, self.groups[:max_groups], self.weight)

    def summary(self) -> str:
        counts = ", ".join(f"{lang}:{len(ids)}" for lang, ids in self.by_language.items())
        return f"{self.name}: {len(self.groups)} groups ({len(self.multilingual)} multilingual); {counts}"


# ---------------------------------------------------------------------------------------------- JSONL


def load_jsonl(path: str | Path, name: str | None = None) -> ParallelDataset:
    path = Path(path)
    rows: dict[str, dict[str, Entry]] = {}
    keys: dict[str, set[str]] = defaultdict(set)
    for number, row in read_jsonl_rows(path):
        where = f"{path}:{number}"
        for required in ("group", "language", "question", "passage"):
            if not isinstance(row.get(required), (str, int)) or str(row[required]).strip() == "":
                raise ValueError(f"{where}: missing or empty field {required!r}")
        negatives = row.get("hard_negatives", [])
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise ValueError(f"{where}: 'hard_negatives' must be a list of strings")
        group, language = str(row["group"]), str(row["language"])
        entries = rows.setdefault(group, {})
        if language in entries:
            raise ValueError(f"{where}: group {group!r} already has language {language!r}")
        entries[language] = Entry(str(row["question"]), str(row["passage"]), tuple(negatives))
        if row.get("passage_id") is not None:
            keys[group].add(f"passage:{row['passage_id']}")
    groups = [Group(group, entries, frozenset(keys[group])) for group, entries in rows.items()]
    return ParallelDataset(name or path.stem, groups)


# ------------------------------------------------------------------------------- SQuAD with sentences


def load_squad_sentences(
    source: str | Path | Mapping[str, str | Path],
    name: str | None = None,
    split_file: str | Path | None = None,
    exclude_articles: Iterable[int] = (),
    paragraph_negatives: bool = False,
) -> ParallelDataset:
    """LAReQA-format data as groups keyed by question id.

    ``source``: a directory of ``<language>.json`` files or a ``{language: path}`` mapping. With a split file
    (by default ``split.json`` in that directory, when present) only the ``train`` articles are read, and any
    question of the ``test`` half reaching the training data is an error. ``exclude_articles`` removes more
    articles (the dev hold-out). ``paragraph_negatives`` adds the paragraph's other sentences as hard negatives.
    """
    if isinstance(source, Mapping):
        files = {language: Path(path) for language, path in source.items()}
        directory = None
    else:
        directory = Path(source)
        files = squad_files(directory)
    if split_file is None and directory is not None and (directory / SPLIT_FILE).is_file():
        split_file = directory / SPLIT_FILE
    split = SquadSplit.load(split_file) if split_file is not None else None
    allowed_articles = set(split.train_articles) if split else None
    excluded = set(exclude_articles)
    dataset_name = name or (directory.name if directory else "squad")

    entries: dict[str, dict[str, Entry]] = defaultdict(dict)
    keys: dict[str, set[str]] = defaultdict(set)
    for language, path in files.items():
        for q in read_squad_sentences(path):
            if (allowed_articles is not None and q.article not in allowed_articles) or q.article in excluded:
                continue
            negatives = tuple(s for i, s in enumerate(q.sentences) if i != q.sentence) if paragraph_negatives else ()
            entries[q.id][language] = Entry(q.question, q.sentences[q.sentence], negatives)
            # Questions answered by the same sentence must not meet in a batch.
            keys[q.id].add(f"{dataset_name}:{q.article}/{q.paragraph}/{language}/{q.sentence}")
    if split is not None:
        leaked = split.test_ids & set(entries)
        # The test half is the evaluation set: training on it would make every reported number meaningless.
        assert not leaked, f"{len(leaked)} test-half questions of {split_file} reached the training data"
    groups = [Group(qid, by_language, frozenset(keys[qid])) for qid, by_language in entries.items()]
    return ParallelDataset(dataset_name, groups)


# --------------------------------------------------------------------------------------------- squad2-fi

SQUAD2_FI_LANGUAGES = {"en_bt": "en", "fi": "fi"}


def load_squad2_fi(path: str | Path, name: str = "squad2-fi", max_paragraphs: int | None = None) -> ParallelDataset:
    """squad2-fi paragraphs: each question's positive is its whole paragraph (no answer offsets available).

    Gives en–en, fi–fi, en→fi and fi→en pairs ("en" is DeepL's back-translation of the Finnish text).
    """
    path = Path(path)
    groups = []
    for count, (_, row) in enumerate(read_jsonl_rows(path), 1):
        if max_paragraphs is not None and count > max_paragraphs:
            break
        paragraph_key = f"{name}:{row['doc']}/{row['para']}"
        context = row["context"]
        for index, question in enumerate(row["questions"]):
            by_language = {
                language: Entry(question[field_name], context[field_name])
                for field_name, language in SQUAD2_FI_LANGUAGES.items()
                if question.get(field_name) and context.get(field_name)
            }
            if by_language:
                groups.append(Group(f"{row['doc']}/{row['para']}/{index}", by_language, frozenset({paragraph_key})))
    return ParallelDataset(name, groups)


# ------------------------------------------------------------------------------------------------ NTREX

NTREX_LANGUAGES = {
    "arb": "ar", "deu": "de", "ell": "el", "eng-US": "en", "spa": "es", "hin": "hi",
    "rus": "ru", "tha": "th", "tur": "tr", "vie": "vi", "zho-CN": "zh",
}
NO_SPACE_LANGUAGES = {"zh", "ja"}


def passage_spans(document_ids: Sequence[str], sentences_per_passage: int) -> list[tuple[int, int]]:
    """Consecutive runs of ``sentences_per_passage`` lines within each document; a short tail joins the run before."""
    if sentences_per_passage < 1:
        raise ValueError("sentences_per_passage must be >= 1")
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(document_ids):
        end = start
        while end < len(document_ids) and document_ids[end] == document_ids[start]:
            end += 1
        doc_spans = [(s, min(s + sentences_per_passage, end)) for s in range(start, end, sentences_per_passage)]
        if len(doc_spans) > 1 and doc_spans[-1][1] - doc_spans[-1][0] < (sentences_per_passage + 1) // 2:
            tail = doc_spans.pop()
            doc_spans[-1] = (doc_spans[-1][0], tail[1])
        spans.extend(doc_spans)
        start = end
    return spans


def load_ntrex(
    directory: str | Path, name: str = "ntrex128", sentences_per_passage: int = 3,
    languages: Iterable[str] | None = None,
) -> ParallelDataset:
    """NTREX-128 as sentence-to-passage alignment: the "question" is a sentence, the passage the run of
    neighbouring sentences (same document, ``DOCUMENT_IDS.tsv``) that contains it."""
    directory = Path(directory)
    document_ids = [line.strip() for line in (directory / "DOCUMENT_IDS.tsv").read_text(encoding="utf-8").splitlines()]
    wanted = set(languages) if languages is not None else set(NTREX_LANGUAGES.values())
    lines: dict[str, list[str]] = {}
    for code, language in NTREX_LANGUAGES.items():
        path = directory / f"newstest2019-ref.{code}.txt"
        if language not in wanted or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8").splitlines()
        if len(text) != len(document_ids):
            raise ValueError(f"{path}: {len(text)} lines, but DOCUMENT_IDS.tsv has {len(document_ids)}")
        lines[language] = [line.strip() for line in text]
    if not lines:
        raise FileNotFoundError(f"{directory}: no newstest2019-ref.<language>.txt files for {sorted(wanted)}")

    groups = []
    for span_index, (start, end) in enumerate(passage_spans(document_ids, sentences_per_passage)):
        passages = {
            language: ("" if language in NO_SPACE_LANGUAGES else " ").join(text[start:end])
            for language, text in lines.items()
        }
        for line in range(start, end):
            by_language = {
                language: Entry(text[line], passages[language]) for language, text in lines.items() if text[line]
            }
            if by_language:
                groups.append(Group(f"line{line}", by_language, frozenset({f"{name}:passage{span_index}"})))
    return ParallelDataset(name, groups)
