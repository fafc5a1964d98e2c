"""Is run B really better than run A? Paired tests of LAReQA differences over the queries. numpy only.

``python -m evaluation lareqa`` writes, beside its report, one per-query file per row of its table
(``per_query/<label>[-<calibration>].jsonl.gz``): one JSON line per (question id, query language) with the
ranks of that query's relevant candidates (``evaluation.lareqa.query_rows``). Every LAReQA figure is a
function of these ranks, so a file reproduces its row of the report exactly (checked on loading when the
report is beside it).

**Pairing unit: the question id.** XQuAD-R questions are 11-way parallel: one question id is asked in
every language, and those 11 queries are strongly correlated (same content, same answer). Resampling or
permuting single queries would treat them as 11 independent observations and give intervals that are
too narrow. So both procedures work on whole question ids (a cluster bootstrap / cluster permutation):

- 95 % CI of B − A: percentile bootstrap; each resample draws question ids with replacement, keeps all
  of a drawn question's queries in both runs (paired), and recomputes both figures exactly;
- p: two-sided paired sign-flip permutation test; each permutation swaps A and B for a random half of
  the question ids (all of a question's queries together). p = (1 + #{|T*| ≥ |T|}) / (1 + flips).

**The statistic bootstrapped is the report's.** No LAReQA figure is a plain mean over queries: each is
a mean over *cells* of cell means (mono: cell = query language; cross: cell = (query language, answer
language) pair, Y ≠ X; multilingual figures and rank distance: cell = query language, the macro
average over languages). With ``V[q, g]`` the sum of question q's terms in cell g and ``N[q, g]`` their
number, a figure is ``mean over cells g with N > 0 of sum_q V[q, g] / sum_q N[q, g]``. A resample with
question counts ``c`` gives ``mean_g (c @ V)[g] / (c @ N)[g]``, computed for all resamples at once as
one matrix product. Both runs share ``N`` (same queries), so B − A = ``sum_q w_q`` with
``w_q = mean_g (V_B - V_A)[q, g] / N_g``; a sign flip negates ``w_q``.

**Seeds.** Several runs per side (several training seeds of one recipe): each query's terms are averaged
over the side's runs before the same test, so the interval is over questions for the seed-averaged
model; ``seed_summary`` gives each figure's mean and sample sd over runs.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation import metrics
from evaluation.jsonl import read_jsonl_rows
from evaluation.lareqa import RECALL_KS
from evaluation.report import LAREQA_COLUMNS, safe_name

PER_QUERY_DIR = "per_query"
PER_QUERY_SUFFIX = ".jsonl.gz"
REPORT_FILE = "report.json"
# A per-query file must reproduce its report's figure to this (floating-point summation order only).
REPORT_TOLERANCE = 1e-9
CONFIDENCE = 0.95
BOOTSTRAP_CELLS_PER_CHUNK = 2_000_000  # resamples x questions held at once (16 MB of float64)

# metric -> family: metrics of one family average over the same cells (and share their counts N)
FAMILY = {"mono_map": "mono", "cross_map": "cross", "multilingual_map": "multilingual",
          "rank_distance": "multilingual"}
for _k in RECALL_KS:
    FAMILY |= {f"mono_r@{_k}": "mono", f"cross_r@{_k}": "cross", f"multilingual_r@{_k}": "multilingual"}
METRICS = [(key, header, spec) for key, header, spec in LAREQA_COLUMNS if key in FAMILY]
LOWER_IS_BETTER = {"rank_distance"}


class InputError(ValueError):
    """Per-query input that cannot be compared (missing, malformed, other queries): one line for the CLI."""


# ------------------------------------------------------------------------------- per-query files


def per_query_path(out_dir: Path, label: str, method: str | None, taken: set[Path]) -> Path:
    """``<out_dir>/per_query/<label>[-<method>].jsonl.gz`` (``method`` when a report has several), made
    unique among ``taken`` (``safe_name`` can map two labels to one name)."""
    stem = safe_name(label) + (f"-{method}" if method else "")
    path, n = out_dir / PER_QUERY_DIR / f"{stem}{PER_QUERY_SUFFIX}", 2
    while path in taken:
        path, n = out_dir / PER_QUERY_DIR / f"{stem}-{n}{PER_QUERY_SUFFIX}", n + 1
    taken.add(path)
    return path


def write_per_query(path: Path, rows: Sequence[dict]) -> Path:
    """One compact JSON object per line, gzip with no name or timestamp (same rows, same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    return path


def _ranks(path: Path, number: int, row: dict, key: str) -> dict[str, int]:
    ranks = row.get(key)
    if not isinstance(ranks, dict) or not all(isinstance(r, int) and r >= 1 for r in ranks.values()):
        raise InputError(f"{path}:{number}: '{key}' must map languages to 1-based integer ranks")
    return ranks


def read_per_query(path: str | Path) -> list[dict]:
    """Rows of a per-query file (``.jsonl`` or ``.jsonl.gz``), validated."""
    path = Path(path)
    rows = []
    try:
        for number, row in read_jsonl_rows(path):
            if not isinstance(row.get("id"), str) or not isinstance(row.get("language"), str):
                raise InputError(f"{path}:{number}: a row needs string 'id' and 'language'")
            pool, own = _ranks(path, number, row, "pool_rank"), _ranks(path, number, row, "language_rank")
            if set(pool) != set(own):
                raise InputError(f"{path}:{number}: 'pool_rank' and 'language_rank' name different languages")
            rows.append(row)
    except (OSError, EOFError, ValueError) as error:  # gzip errors are OSError; bad JSON is ValueError
        raise InputError(str(error) if isinstance(error, InputError) else f"cannot read {path}: {error}") from None
    if not rows:
        raise InputError(f"{path}: no per-query rows")
    return rows


# ------------------------------------------------------------------------------------ the scores


@dataclass(frozen=True, eq=False)
class Scores:
    """One run's per-query terms, rows sorted by (question id, query language).

    ``terms[metric]`` holds the values the figure averages, in the order ``layout`` gives their
    (question, cell); two runs over the same queries and answers share the layout."""

    keys: tuple[tuple[str, str], ...]
    languages: tuple[str, ...]
    relevant: np.ndarray  # (rows, languages) bool: which candidate languages hold an answer
    terms: dict[str, np.ndarray]
    source: str

    @classmethod
    def from_rows(cls, rows: Sequence[dict], source: str) -> "Scores":
        rows = sorted(rows, key=lambda row: (row["id"], row["language"]))
        keys = tuple((row["id"], row["language"]) for row in rows)
        duplicate = next((a for a, b in zip(keys, keys[1:]) if a == b), None)
        if duplicate:
            raise InputError(f"{source}: question {duplicate[0]!r} appears twice in language {duplicate[1]!r}")
        languages = tuple(sorted({row["language"] for row in rows} | {y for row in rows for y in row["pool_rank"]}))
        column = {language: j for j, language in enumerate(languages)}
        own = np.zeros((len(rows), len(languages)), dtype=np.int64)
        for i, row in enumerate(rows):
            for language, rank in row["language_rank"].items():
                own[i, column[language]] = rank
        terms = _single_answer_terms(own, np.array([column[x] for _, x in keys]))
        terms |= _pooled_terms([list(row["pool_rank"].values()) for row in rows])
        return cls(keys, languages, own > 0, terms, source)

    @property
    def query_language(self) -> np.ndarray:
        column = {language: j for j, language in enumerate(self.languages)}
        return np.array([column[x] for _, x in self.keys])

    @cached_property
    def questions(self) -> tuple[np.ndarray, int]:
        """Question index of every row, and the number of questions."""
        _, index = np.unique([qid for qid, _ in self.keys], return_inverse=True)
        return index, int(index.max()) + 1

    @cached_property
    def layout(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """family -> (question of each term, cell of each term, number of cells); the term order of
        ``_single_answer_terms`` / ``_pooled_terms``."""
        question, _ = self.questions
        x, n_lang = self.query_language, len(self.languages)
        mono = self.relevant[np.arange(len(x)), x]
        rows, answer = np.nonzero(self.relevant & (np.arange(n_lang)[None, :] != x[:, None]))
        return {"mono": (question[mono], x[mono], n_lang),
                "cross": (question[rows], x[rows] * n_lang + answer, n_lang * n_lang),
                "multilingual": (question, x, n_lang)}

    def table(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(V, N)``: per question (rows) and present cell (columns), the sum and the number of terms."""
        return _table(*self.layout[FAMILY[metric]], self.questions[1], self.terms[metric])

    def figures(self) -> dict[str, float]:
        """Every figure as the report computes it (mean over cells of cell means)."""
        return {metric: figure(*self.table(metric)) for metric, _, _ in METRICS}


def _single_answer_terms(own: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Mono and cross terms: with one relevant candidate per setting, AP = 1 / rank within the answer's
    language and R@k = hit@k (``metrics.average_precision`` / ``hit_at_k`` of one rank, vectorised)."""
    n_lang = own.shape[1]
    mono = own[np.arange(len(x)), x]
    mono = mono[mono > 0]
    cross = own[(own > 0) & (np.arange(n_lang)[None, :] != x[:, None])]  # row-major, as in ``layout``
    terms = {"mono_map": 1.0 / mono, "cross_map": 1.0 / cross}
    for k in RECALL_KS:
        terms[f"mono_r@{k}"] = (mono <= k).astype(np.float64)
        terms[f"cross_r@{k}"] = (cross <= k).astype(np.float64)
    return terms


def _pooled_terms(pool_ranks: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """One term per query from its answers' pooled ranks, with the report's own functions."""
    terms = {"multilingual_map": [metrics.average_precision(r) for r in pool_ranks],
             "rank_distance": [metrics.rank_distance(r) for r in pool_ranks]}
    for k in RECALL_KS:
        terms[f"multilingual_r@{k}"] = [metrics.recall_at_k(r, k) for r in pool_ranks]
    return {metric: np.asarray(values, dtype=np.float64) for metric, values in terms.items()}


def _table(question: np.ndarray, cell: np.ndarray, n_cells: int, n_questions: int, values: np.ndarray):
    sums = np.zeros((n_questions, n_cells))
    counts = np.zeros((n_questions, n_cells))
    np.add.at(sums, (question, cell), values)
    np.add.at(counts, (question, cell), 1.0)
    present = counts.sum(axis=0) > 0  # cells no query falls in are in no figure
    return sums[:, present], counts[:, present]


def figure(sums: np.ndarray, counts: np.ndarray) -> float:
    return float(np.mean(sums.sum(axis=0) / counts.sum(axis=0)))


# ------------------------------------------------------------------------------ several runs


def check_same_queries(a: Scores, b: Scores) -> None:
    """InputError unless ``a`` and ``b`` hold the same (question id, language) rows with the same answers."""
    if a.keys != b.keys:
        only_a, only_b = sorted(set(a.keys) - set(b.keys)), sorted(set(b.keys) - set(a.keys))
        example = only_a[0] if only_a else only_b[0]
        raise InputError(f"{a.source} and {b.source} are not over the same queries: {len(only_a)} "
                         f"(question id, language) only in the first, {len(only_b)} only in the second "
                         f"(e.g. {example[0]!r} in {example[1]!r})")
    if a.languages != b.languages or not np.array_equal(a.relevant, b.relevant):
        raise InputError(f"{a.source} and {b.source} have the same queries but different answer languages")


def average(runs: Sequence[Scores]) -> Scores:
    """The seed average: each term averaged over ``runs`` (which must be over the same queries)."""
    for other in runs[1:]:
        check_same_queries(runs[0], other)
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    terms = {metric: np.mean([run.terms[metric] for run in runs], axis=0) for metric in first.terms}
    source = "mean of " + ", ".join(run.source for run in runs)
    return Scores(first.keys, first.languages, first.relevant, terms, source)


def seed_summary(runs: Sequence[Scores]) -> dict[str, dict]:
    """Per figure: mean, sample sd (ddof 1; None for one run), min, max and n over ``runs``."""
    for other in runs[1:]:
        check_same_queries(runs[0], other)
    figures = [run.figures() for run in runs]
    values = np.array([[run[metric] for metric, _, _ in METRICS] for run in figures])
    return {metric: {"mean": float(column.mean()), "sd": float(column.std(ddof=1)) if len(column) > 1 else None,
                     "min": float(column.min()), "max": float(column.max()), "n": len(column)}
            for (metric, _, _), column in zip(METRICS, values.T)}


# ----------------------------------------------------------------------------------- the tests


def _question_counts(rng: np.random.Generator, n: int, n_questions: int) -> np.ndarray:
    """(n, questions): how often each question is drawn in each of ``n`` resamples of size questions."""
    draws = rng.integers(0, n_questions, size=(n, n_questions)) + (np.arange(n) * n_questions)[:, None]
    return np.bincount(draws.ravel(), minlength=n * n_questions).reshape(n, n_questions).astype(np.float64)


def bootstrap_differences(tables: dict[str, tuple[np.ndarray, np.ndarray]], resamples: int,
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``resamples`` bootstrap replicates of B − A per metric; ``tables[metric] = (V_B - V_A, N)``.

    A replicate's difference is ``mean_g (c @ D)[g] / (c @ N)[g]`` over the cells present in it: the
    report's statistic on the resampled questions, for both runs at once (they share N)."""
    n_questions = next(iter(tables.values()))[0].shape[0]
    chunk = max(1, BOOTSTRAP_CELLS_PER_CHUNK // n_questions)
    out: dict[str, list[np.ndarray]] = {metric: [] for metric in tables}
    for start in range(0, resamples, chunk):
        counts = _question_counts(rng, min(chunk, resamples - start), n_questions)
        for metric, (difference, n) in tables.items():
            cell_n = counts @ n
            present = cell_n > 0
            ratio = np.divide(counts @ difference, cell_n, out=np.zeros_like(cell_n), where=present)
            out[metric].append(ratio.sum(axis=1) / present.sum(axis=1))
    return {metric: np.concatenate(parts) for metric, parts in out.items()}


def question_weights(difference: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``w_q`` with B − A = ``sum_q w_q``: each question's share of the difference of the cell means."""
    return (difference / counts.sum(axis=0)).sum(axis=1) / counts.shape[1]


def sign_flip_p(weights: np.ndarray, flips: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided p per column of ``weights`` (questions, metrics): the share of random sign flips of
    whole questions whose |sum| reaches the observed |sum|, counting the observed one."""
    observed = np.abs(weights.sum(axis=0))
    tolerance = 1e-12 * (1.0 + observed)  # the same sum in another order must count as reaching it
    chunk = max(1, BOOTSTRAP_CELLS_PER_CHUNK // weights.shape[0])
    reached = np.zeros(weights.shape[1])
    for start in range(0, flips, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, flips - start), weights.shape[0])) * 2.0 - 1.0
        reached += (np.abs(signs @ weights) >= observed - tolerance).sum(axis=0)
    return (1.0 + reached) / (1.0 + flips)


def compare(side_a: Sequence[Scores], side_b: Sequence[Scores], resamples: int = 10_000, seed: int = 0) -> dict:
    """B − A per metric with its bootstrap CI and sign-flip p, both clustered by question id (module doc)."""
    a, b = average(side_a), average(side_b)
    check_same_queries(a, b)
    boot_rng, flip_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    tables, figures = {}, {}
    for metric, _, _ in METRICS:
        (sums_a, n), (sums_b, _) = a.table(metric), b.table(metric)
        tables[metric] = (sums_b - sums_a, n)
        figures[metric] = (figure(sums_a, n), figure(sums_b, n))
    replicates = bootstrap_differences(tables, resamples, boot_rng)
    weights = np.column_stack([question_weights(*tables[metric]) for metric, _, _ in METRICS])
    p_values = sign_flip_p(weights, resamples, flip_rng)
    tail = 100 * (1 - CONFIDENCE) / 2
    results = {}
    for (metric, _, _), p in zip(METRICS, p_values):
        low, high = np.percentile(replicates[metric], [tail, 100 - tail])
        fa, fb = figures[metric]
        results[metric] = {"a": fa, "b": fb, "difference": fb - fa, "ci_low": float(low), "ci_high": float(high),
                           "p": float(p)}
    return {"n_questions": a.questions[1], "n_queries": len(a.keys), "languages": list(a.languages),
            "resamples": resamples, "seed": seed, "confidence": CONFIDENCE, "cluster": "question id",
            "runs_a": [run.source for run in side_a], "runs_b": [run.source for run in side_b],
            "seed_averaged": len(side_a) > 1 or len(side_b) > 1, "metrics": results}


# ----------------------------------------------------------------------------------- run specs


@dataclass(frozen=True)
class Run:
    scores: Scores
    label: str
    reported: dict | None  # the report row's results, when the report beside the file names it


def _report_entries(report_path: Path) -> dict[str, dict]:
    try:
        models = json.loads(report_path.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot read {report_path}: {error}") from None
    return {label: entry for label, entry in models.items() if isinstance(entry, dict) and entry.get("per_query")}


def _from_directory(directory: Path, row: str | None) -> tuple[Path, str, dict]:
    report = directory / REPORT_FILE
    if not report.is_file():
        raise InputError(f"{directory} is neither a per-query file nor a report directory ({REPORT_FILE} missing)")
    entries = _report_entries(report)
    if not entries:
        raise InputError(f"{report} names no per-query files (written by `python -m evaluation lareqa` since "
                         "per-query output was added; re-run it)")
    if row is None and len(entries) == 1:
        row = next(iter(entries))
    chosen = [label for label, entry in entries.items() if row in (label, _stem(Path(entry["per_query"])))]
    if not chosen:
        rows = ", ".join(f"{label!r}" for label in entries)
        raise InputError(f"{directory}: {'choose a row with --row' if row is None else f'no row {row!r}'} "
                         f"(rows: {rows}), or give a per-query file")
    entry = entries[chosen[0]]
    return directory / entry["per_query"], chosen[0], entry.get("results")


def _beside(path: Path) -> tuple[str, dict | None]:
    """The label and figures of the report row that names ``path`` (``<report>/per_query/<file>``)."""
    report = path.parent.parent / REPORT_FILE
    if path.parent.name == PER_QUERY_DIR and report.is_file():
        for label, entry in _report_entries(report).items():
            if (report.parent / entry["per_query"]).resolve() == path.resolve():
                return label, entry.get("results")
    return _stem(path), None


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".jsonl")


def load_run(spec: str | Path, row: str | None = None) -> Run:
    """A run given as a per-query file, or as a report directory (``row``: which of its rows, by label
    or file stem; not needed when it has one). Checked against the report's figures when it has them."""
    spec = Path(spec)
    if spec.is_dir():
        path, label, reported = _from_directory(spec, row)
    elif spec.is_file():
        path, (label, reported) = spec, _beside(spec)
    else:
        raise InputError(f"no such per-query file or report directory: {spec}")
    scores = Scores.from_rows(read_per_query(path), str(path))
    for metric, value in scores.figures().items():
        if reported and metric in reported and abs(value - reported[metric]) > REPORT_TOLERANCE * max(1.0, abs(value)):
            raise InputError(f"{path} gives {metric} {value:.6f} but its report says {reported[metric]:.6f} "
                             "(file out of date?)")
    return Run(scores, label, reported)


# ---------------------------------------------------------------------------------------- output


def _fmt(value: float, spec: str, sign: bool = False) -> str:
    digits = 1 if spec == ".0f" else 4  # differences of 0.005 need a fourth decimal
    value = value if round(value, digits) != 0 else 0.0  # no "-0.0000" for a rounding-error difference
    return format(value, f"{'+' if sign else ''}.{digits}f")


def _header(metric: str, header: str) -> str:
    return header + (" ↓" if metric in LOWER_IS_BETTER else "")


def _side(label: str, runs: Sequence[Run]) -> str:
    if len(runs) == 1:
        return f"- {label}: {runs[0].label} (`{runs[0].scores.source}`)"
    names = ", ".join(f"{run.label} (`{run.scores.source}`)" for run in runs)
    return f"- {label}: seed average of {len(runs)} runs, per-query scores averaged before the test: {names}"


def comparison_markdown(result: dict, runs_a: Sequence[Run], runs_b: Sequence[Run]) -> str:
    resamples = result["resamples"]
    lines = [
        f"Paired comparison, B − A, over {result['n_questions']} question ids ({result['n_queries']} queries, "
        f"{len(result['languages'])} languages){', seed-averaged' if result['seed_averaged'] else ''}.",
        "", _side("A", runs_a), _side("B", runs_b), "",
        f"95% CI: percentile cluster bootstrap over question ids (a question's queries in every language are "
        f"resampled together, in both runs), {resamples:,} resamples, seed {result['seed']}. "
        f"p: two-sided paired sign-flip permutation test, A and B swapped per question id, {resamples:,} flips "
        f"(smallest possible p {1 / (resamples + 1):.2g}).", "",
        "| metric | A | B | B − A | 95% CI | p |", "|---|---:|---:|---:|---:|---:|",
    ]
    for metric, header, spec in METRICS:
        m = result["metrics"][metric]
        lines.append(f"| {_header(metric, header)} | {_fmt(m['a'], spec)} | {_fmt(m['b'], spec)} | "
                     f"{_fmt(m['difference'], spec, True)} | [{_fmt(m['ci_low'], spec, True)}, "
                     f"{_fmt(m['ci_high'], spec, True)}] | {m['p']:.4f} |")
    return "\n".join(lines) + "\n"


def seeds_markdown(summary: dict, runs: Sequence[Run]) -> str:
    first = runs[0].scores
    lines = [f"{len(runs)} runs over the same {first.questions[1]} question ids ({len(first.keys)} queries); "
             "sd = sample standard deviation over runs (n − 1).", ""]
    lines += [f"- {run.label} (`{run.scores.source}`)" for run in runs]
    lines += ["", "| metric | mean | sd | min | max | n |", "|---|---:|---:|---:|---:|---:|"]
    for metric, header, spec in METRICS:
        s = summary[metric]
        sd = "–" if s["sd"] is None else _fmt(s["sd"], spec)
        lines.append(f"| {_header(metric, header)} | {_fmt(s['mean'], spec)} | {sd} | {_fmt(s['min'], spec)} | "
                     f"{_fmt(s['max'], spec)} | {s['n']} |")
    return "\n".join(lines) + "\n"
