"""evaluation/significance.py and `python -m evaluation compare|seeds`: per-query files reproduce the
report exactly, the vectorised bootstrap and sign flips are the report's statistic on resampled /
swapped questions, and the CLI's answers on identical, uniformly better and mismatched runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation import significance
from evaluation.__main__ import main
from evaluation.lareqa import LareqaSet, evaluate_lareqa, lareqa_metrics
from evaluation.significance import InputError, Scores, compare, seed_summary, write_per_query
from tests.test_lareqa import HAND_SET, FakeEncoder
from tests.trainer_fixtures import write_squad_dir

FIGURES = [metric for metric, _, _ in significance.METRICS]


def random_set(rng, n_questions=40, languages=("de", "en", "fr"), per_language=25, missing=0.3):
    """A LareqaSet whose questions exist in a random subset of languages (so languages have different
    numbers of queries and the macro averages are not plain means over queries)."""
    candidates, candidate_language, starts = [], [], {}
    for language in languages:
        starts[language] = len(candidates)
        candidates += [f"{language}{i}" for i in range(per_language)]
        candidate_language += [language] * per_language
    data = LareqaSet(list(languages), candidates, candidate_language, [], [], [], [])
    for q in range(n_questions):
        present = [x for x in languages if rng.random() > missing] or [languages[q % len(languages)]]
        answers = {x: starts[x] + int(rng.integers(per_language)) for x in present}
        for x in present:
            data.queries.append(f"q{q} {x}")
            data.query_language.append(x)
            data.query_id.append(f"q{q}")
            data.relevant.append(answers)
    return data


def random_rows(rng, data, dim=8, signal=1.0):
    """Per-query rows of random embeddings; ``signal`` pulls each query towards its answers."""
    candidates = rng.normal(size=(len(data.candidates), dim))
    queries = rng.normal(size=(len(data.queries), dim))
    queries += signal * np.array([candidates[list(r.values())].mean(axis=0) for r in data.relevant])
    return lareqa_metrics(queries, candidates, data, per_query=True)


def perfect(rows):
    """The same queries, every answer first in its language and at the top of the pool."""
    out = []
    for row in rows:
        languages = sorted(row["pool_rank"])
        out.append(row | {"pool_rank": {y: i + 1 for i, y in enumerate(languages)},
                          "language_rank": {y: 1 for y in languages}})
    return out


# ------------------------------------------------------------------------ exact decomposition


def test_per_query_rows_reproduce_the_hand_computed_figures():
    result = evaluate_lareqa(FakeEncoder(), HAND_SET, per_query=True)
    rows = result["per_query"]
    assert rows[0] == {"id": "a", "language": "en", "pool_rank": {"de": 3, "en": 1},
                       "language_rank": {"de": 2, "en": 1}}
    figures = Scores.from_rows(rows, "hand").figures()
    assert figures["multilingual_map"] == pytest.approx(17 / 24) and figures["rank_distance"] == pytest.approx(2.0)
    assert figures == pytest.approx({metric: result[metric] for metric in FIGURES}, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_figures_from_rows_equal_lareqa_metrics_with_unequal_languages(seed):
    rng = np.random.default_rng(seed)
    data = random_set(rng)
    result = random_rows(rng, data)
    assert len(set(data.query_language)) == 3 and len(data.queries) < 3 * 40  # not every question everywhere
    figures = Scores.from_rows(result.pop("per_query"), "random").figures()
    assert figures == pytest.approx({metric: result[metric] for metric in FIGURES}, rel=1e-12, abs=1e-12)


def test_bootstrap_replicate_is_the_figure_of_the_resampled_questions():
    rng = np.random.default_rng(3)
    data = random_set(rng, n_questions=12)
    rows_a, rows_b = random_rows(rng, data)["per_query"], random_rows(rng, data, signal=2.0)["per_query"]
    a, b = Scores.from_rows(rows_a, "a"), Scores.from_rows(rows_b, "b")
    tables = {}
    for metric in FIGURES:
        (sa, n), (sb, _) = a.table(metric), b.table(metric)
        tables[metric] = (sb - sa, n)
    replicates = significance.bootstrap_differences(tables, 4, np.random.default_rng(9))
    counts = significance._question_counts(np.random.default_rng(9), 4, a.questions[1])
    question_ids = sorted({row["id"] for row in rows_a})

    def resampled(rows, draw):  # question i repeated draw[i] times, each copy a question of its own
        return [row | {"id": f"{row['id']}#{c}"} for row in rows
                for c in range(int(draw[question_ids.index(row["id"])]))]

    for r, draw in enumerate(counts):
        fa = Scores.from_rows(resampled(rows_a, draw), "a*").figures()
        fb = Scores.from_rows(resampled(rows_b, draw), "b*").figures()
        for metric in FIGURES:
            assert replicates[metric][r] == pytest.approx(fb[metric] - fa[metric], abs=1e-12)


def test_sign_flip_is_swapping_whole_questions():
    rng = np.random.default_rng(4)
    data = random_set(rng, n_questions=10)
    rows_a, rows_b = random_rows(rng, data)["per_query"], random_rows(rng, data, signal=2.0)["per_query"]
    a, b = Scores.from_rows(rows_a, "a"), Scores.from_rows(rows_b, "b")
    question_ids = sorted({row["id"] for row in rows_a})
    signs = np.where(rng.random(len(question_ids)) < 0.5, -1.0, 1.0)
    swapped = {qid for qid, s in zip(question_ids, signs) if s < 0}
    new_a = Scores.from_rows([rb if ra["id"] in swapped else ra for ra, rb in zip(rows_a, rows_b)], "a'").figures()
    new_b = Scores.from_rows([ra if ra["id"] in swapped else rb for ra, rb in zip(rows_a, rows_b)], "b'").figures()
    for metric in FIGURES:
        (sa, n), (sb, _) = a.table(metric), b.table(metric)
        weights = significance.question_weights(sb - sa, n)
        assert weights.sum() == pytest.approx(significance.figure(sb, n) - significance.figure(sa, n), abs=1e-12)
        assert signs @ weights == pytest.approx(new_b[metric] - new_a[metric], abs=1e-12)


# ------------------------------------------------------------------------------- the answers


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(5)
    data = random_set(rng, n_questions=60, missing=0.0)
    return [Scores.from_rows(random_rows(rng, data)["per_query"], f"seed{i}") for i in range(3)]


def test_identical_runs_difference_zero_p_one(runs):
    result = compare([runs[0]], [runs[0]], resamples=500)
    for metric in FIGURES:
        m = result["metrics"][metric]
        assert m["difference"] == 0.0 and m["ci_low"] == 0.0 == m["ci_high"] and m["p"] == 1.0


def test_better_on_every_question_excludes_zero():
    rng = np.random.default_rng(6)
    data = random_set(rng, n_questions=30, missing=0.0)
    rows = random_rows(rng, data, signal=0.3)["per_query"]
    a, b = Scores.from_rows(rows, "a"), Scores.from_rows(perfect(rows), "b")
    result = compare([a], [b], resamples=2000)
    assert result["n_questions"] == 30 and result["n_queries"] == 90 and result["cluster"] == "question id"
    for metric in ("mono_map", "cross_map", "multilingual_map", "multilingual_r@1", "rank_distance"):
        m = result["metrics"][metric]
        better = -m["difference"] if metric == "rank_distance" else m["difference"]
        assert better > 0 and m["p"] < 0.001, metric
        assert (m["ci_high"] < 0) if metric == "rank_distance" else (m["ci_low"] > 0), metric
    assert result["metrics"]["mono_map"]["b"] == 1.0


def test_ci_reproducible_with_the_seed(runs):
    first, again = compare([runs[0]], [runs[1]], 1000, seed=7), compare([runs[0]], [runs[1]], 1000, seed=7)
    other = compare([runs[0]], [runs[1]], 1000, seed=8)
    assert first == again
    assert first["metrics"]["cross_map"]["ci_low"] != other["metrics"]["cross_map"]["ci_low"]
    assert first["metrics"]["cross_map"]["difference"] == other["metrics"]["cross_map"]["difference"]
    m = first["metrics"]["multilingual_map"]
    assert m["ci_low"] <= m["difference"] <= m["ci_high"]


def test_mismatched_queries_are_an_input_error(runs):
    rows = [{"id": f"x{i}", "language": "en", "pool_rank": {"en": 1}, "language_rank": {"en": 1}} for i in range(3)]
    with pytest.raises(InputError, match="not over the same queries: 180 .* only in the first, 3 only in the second"):
        compare([runs[0]], [Scores.from_rows(rows, "other")])
    with pytest.raises(InputError, match="appears twice"):
        Scores.from_rows(rows + rows[:1], "twice")


def test_seeds_summary_and_seed_averaged_compare(runs):
    per_run = np.array([[run.figures()[metric] for metric in FIGURES] for run in runs])
    summary = seed_summary(runs)
    for j, metric in enumerate(FIGURES):
        assert summary[metric]["mean"] == pytest.approx(per_run[:, j].mean(), abs=1e-12)
        assert summary[metric]["sd"] == pytest.approx(per_run[:, j].std(ddof=1), abs=1e-12)
        assert summary[metric]["n"] == 3
    assert seed_summary(runs[:1])["mono_map"]["sd"] is None
    result = compare(runs[:2], runs[1:], resamples=200)
    assert result["seed_averaged"] and result["runs_a"] == ["seed0", "seed1"]
    for j, metric in enumerate(FIGURES):  # per-query averages give the mean of the runs' figures
        assert result["metrics"][metric]["a"] == pytest.approx(per_run[:2, j].mean(), abs=1e-12)
        assert result["metrics"][metric]["b"] == pytest.approx(per_run[1:, j].mean(), abs=1e-12)


def test_per_query_file_round_trip_and_bad_files(tmp_path, runs):
    rng = np.random.default_rng(1)
    rows = random_rows(rng, random_set(rng, n_questions=5))["per_query"]
    path = write_per_query(tmp_path / "per_query" / "x.jsonl.gz", rows)
    assert path.read_bytes() == write_per_query(tmp_path / "again.jsonl.gz", rows).read_bytes()  # no timestamp
    assert significance.read_per_query(path) == rows
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "language": "en", "pool_rank": {"en": 0}, "language_rank": {"en": 1}}\n')
    with pytest.raises(InputError, match="bad.jsonl:1: 'pool_rank' must map languages to 1-based integer ranks"):
        significance.read_per_query(bad)
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="cannot read"):
        significance.read_per_query(tmp_path / "junk.jsonl.gz")


# ------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny_artifact):
    """Two lareqa reports of the tiny artifact on a tiny XQuAD-R-format set: raw and centred rows, and
    the same with English only (other queries)."""
    root = tmp_path_factory.mktemp("compare")
    data = root / "xquad-r"
    write_squad_dir(data, languages=("en", "de", "fr"), articles=4)
    common = ["--model", tiny_artifact, "--name", "tiny", "--data", data, "--cache-dir", root / "cache",
              "--no-progress"]
    assert main(["lareqa", *common, "--calibration", "none", "center", "--out", root / "both"]) == 0
    assert main(["lareqa", *common, "--languages", "en", "de", "--out", root / "two"]) == 0
    return root


def test_lareqa_writes_per_query_files_that_reproduce_the_report(reports):
    report = json.loads((reports / "both" / "report.json").read_text())
    assert {label: entry["per_query"] for label, entry in report["models"].items()} == {
        "tiny [none]": "per_query/tiny-none.jsonl.gz", "tiny [center]": "per_query/tiny-center.jsonl.gz"}
    single = json.loads((reports / "two" / "report.json").read_text())
    assert single["models"]["tiny"]["per_query"] == "per_query/tiny.jsonl.gz"
    for label, entry in report["models"].items():
        rows = significance.read_per_query(reports / "both" / entry["per_query"])
        assert len(rows) == entry["results"]["n_queries"] == 3 * 4 * 2 * 4
        figures = Scores.from_rows(rows, label).figures()
        assert figures == pytest.approx({m: entry["results"][m] for m in FIGURES}, rel=1e-12, abs=1e-12)
        assert "per_query" not in entry["results"]


def test_compare_cli_table_and_json(reports, capsys):
    files = reports / "both" / "per_query"
    out = reports / "cmp.json"
    assert main(["compare", files / "tiny-none.jsonl.gz", files / "tiny-center.jsonl.gz", "--resamples", "500",
                 "--json", out]) == 0
    printed = capsys.readouterr().out
    assert "over 32 question ids (96 queries, 3 languages)" in printed
    assert "cluster bootstrap over question ids" in printed
    assert "| metric | A | B | B − A | 95% CI | p |" in printed and "| rank distance ↓ |" in printed
    assert "- A: tiny [none]" in printed and "seed-averaged" not in printed
    result = json.loads(out.read_text())
    report = json.loads((reports / "both" / "report.json").read_text())["models"]
    for metric in FIGURES:
        m = result["metrics"][metric]
        assert m["a"] == pytest.approx(report["tiny [none]"]["results"][metric], abs=1e-12)
        assert m["b"] == pytest.approx(report["tiny [center]"]["results"][metric], abs=1e-12)
        assert m["ci_low"] <= m["ci_high"] and 0 < m["p"] <= 1
    # a report directory with --row (label or file stem), compared with itself: 0 and p = 1
    assert main(["compare", reports / "both", reports / "both", "--row", "tiny [center]", "--resamples", "200",
                 "--json", out]) == 0
    assert all(m["difference"] == 0 and m["p"] == 1 for m in json.loads(out.read_text())["metrics"].values())
    assert main(["compare", "--a", files / "tiny-none.jsonl.gz", files / "tiny-center.jsonl.gz",
                 "--b", reports / "both", "--row", "tiny-center", "--resamples", "200"]) == 0
    assert "seed-averaged" in capsys.readouterr().out


def test_seeds_cli(reports, capsys):
    files = reports / "both" / "per_query"
    assert main(["seeds", files / "tiny-none.jsonl.gz", files / "tiny-center.jsonl.gz"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 runs over the same 32 question ids (96 queries)")
    assert "| metric | mean | sd | min | max | n |" in printed and "| multi mAP |" in printed


@pytest.mark.parametrize("argv, message", [
    (["compare", "{both}/per_query/tiny-none.jsonl.gz", "{two}"], "are not over the same queries: 32 "),
    (["compare", "{both}", "{two}"], "choose a row with --row (rows: 'tiny [none]', 'tiny [center]')"),
    (["compare", "{both}", "{both}", "--row", "tiny"], "no row 'tiny'"),
    (["compare", "{two}"], "expected two runs"),
    (["compare", "{two}", "{two}", "--a", "{two}"], "not both"),
    (["compare", "{two}", "{two}", "--resamples", "0"], "--resamples must be >= 1"),
    (["compare", "{two}", "{nowhere}"], "no such per-query file or report directory"),
    (["seeds", "{two}", "{both}", "--row", "tiny-none"], "no row 'tiny-none'"),
    (["seeds", "{two}/per_query/tiny.jsonl.gz", "{stale}"], "gives mono_map"),
])
def test_compare_usage_errors_exit_2_with_one_line(reports, tmp_path, capsys, argv, message):
    stale = tmp_path / "stale"  # a report whose per-query file does not give its figures
    (stale / "per_query").mkdir(parents=True)
    (stale / "per_query" / "tiny.jsonl.gz").write_bytes((reports / "two" / "per_query" / "tiny.jsonl.gz").read_bytes())
    report = json.loads((reports / "two" / "report.json").read_text())
    report["models"]["tiny"]["results"]["mono_map"] += 0.01
    (stale / "report.json").write_text(json.dumps(report))
    paths = {"both": reports / "both", "two": reports / "two", "nowhere": tmp_path / "nowhere", "stale": stale}
    assert main([arg.format(**paths) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith(f"python -m evaluation {argv[0]}: error:")
