"""`python -m evaluation`: end-to-end runs on tiny data with the tiny artifact, the embedding cache, the
report files, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from encoder import OnnxEncoder
from evaluation.__main__ import main
from evaluation.cache import cache_path, cached_encode
from tests.conftest import ROOT
from tests.test_beir import write_beir_dir
from tests.trainer_fixtures import write_squad_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("xq") / "xquad-r"
    write_squad_dir(directory, languages=("en", "de"), articles=4)
    return directory


@pytest.fixture
def count_encodes(monkeypatch):
    calls = []
    original = OnnxEncoder.encode

    def counting(self, texts, kind, **kwargs):
        calls.append((kind, len(texts)))
        return original(self, texts, kind, **kwargs)

    monkeypatch.setattr(OnnxEncoder, "encode", counting)
    return calls


def _assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 200


def test_lareqa_end_to_end_two_models_and_cache(tmp_path, tiny_artifact, squad_dir, count_encodes, capsys):
    out, cache = tmp_path / "report", tmp_path / "cache"
    argv = ["lareqa", "--model", tiny_artifact, "--model", tiny_artifact, "--name", "tiny-a", "--name", "tiny b",
            "--data", squad_dir, "--split", "test", "--out", out, "--cache-dir", cache, "--batch-size", "4",
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| model | mono mAP |") and "| tiny-a |" in printed and "| tiny b |" in printed
    # the second model has the same fingerprint: its embeddings already come from the cache
    assert sorted(count_encodes) == [("passage", 24), ("query", 32)]

    report = json.loads((out / "report.json").read_text())
    assert report["benchmark"] == "lareqa" and report["settings"]["split"] == "test"
    assert list(report["models"]) == ["tiny-a", "tiny b"]
    results = report["models"]["tiny-a"]["results"]
    for key in ("mono_map", "cross_map", "multilingual_map", "rank_distance", "mono_r@1", "cross_r@10",
                "multilingual_r@10", "per_language", "cross_matrix"):
        assert key in results
    assert results["n_queries"] == 32 and results["languages"] == ["de", "en"]
    assert 0.0 <= results["multilingual_map"] <= 1.0
    assert report["models"]["tiny b"]["results"] == results
    assert "-int8-" in report["models"]["tiny-a"]["fingerprint"]
    # per-query ranks for `compare`, one file per row (tests/test_compare.py checks their contents)
    assert [entry["per_query"] for entry in report["models"].values()] == [
        "per_query/tiny-a.jsonl.gz", "per_query/tiny_b.jsonl.gz"]
    assert all((out / entry["per_query"]).is_file() for entry in report["models"].values())
    markdown = (out / "report.md").read_text()
    assert "| tiny b |" in markdown and "heatmap-tiny_b.png" in markdown
    for name in ("heatmap-tiny-a.png", "heatmap-tiny_b.png", "rank-distance.png"):
        _assert_png(out / name)

    # cache files: one per kind, named under the fingerprint; a second run encodes nothing and agrees
    entries = sorted(cache.rglob("*.npy"))
    assert [p.name.split("-")[0] for p in entries] == ["passage", "query"]
    assert entries[0].parent.name == report["models"]["tiny-a"]["fingerprint"]
    mtimes = [p.stat().st_mtime_ns for p in entries]
    count_encodes.clear()
    assert main(argv[:3] + ["--data", squad_dir, "--split", "test", "--out", tmp_path / "again", "--cache-dir", cache,
                            "--no-progress"]) == 0
    assert count_encodes == []
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("*.npy"))] == mtimes
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["models"][next(iter(again["models"]))]["results"] == results


def test_lareqa_no_cache_languages_and_fp32(tmp_path, tiny_artifact, squad_dir, count_encodes, capsys):
    cache = tmp_path / "cache"
    argv = ["lareqa", "--model", tiny_artifact, "--data", squad_dir, "--out", tmp_path / "r", "--cache-dir", cache,
            "--no-cache", "--languages", "en,de", "--precision", "fp32", "--no-progress"]
    assert main(argv) == 0 and main(argv) == 0
    assert len(count_encodes) == 4 and not cache.exists()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (entry,) = report["models"].values()
    assert entry["precision"] == "fp32" and entry["results"]["n_queries"] == 2 * 4 * 2 * 4
    assert main(argv[:-5] + ["--languages", "en", "--no-progress"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert next(iter(report["models"].values()))["results"]["languages"] == ["en"]


def test_beir_end_to_end(tmp_path, tiny_artifact, capsys):
    data = write_beir_dir(tmp_path / "beir")
    out = tmp_path / "beir-report"
    assert main(["beir", "--model", tiny_artifact, "--data", data, "--split", "dev", "--k", "10", "--out", out,
                 "--cache-dir", tmp_path / "cache", "--no-progress"]) == 0
    assert "| model | nDCG@10 | Recall@10 | MRR@10 | queries | documents |" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    results = report["models"][tiny_artifact.name]["results"]
    assert (results["n_queries"], results["n_docs"]) == (3, 12)
    assert set(results["per_language"]) == {"en", "de"} and 0.0 <= results["ndcg@10"] <= 1.0
    assert "## " + tiny_artifact.name in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lareqa", "--model", "{missing}"], "artifact.json is missing"),
        (["lareqa", "--model", "{tiny}", "--data", "{missing}"], "data directory not found"),
        (["lareqa", "--model", "{tiny}", "--data", "{squad}", "--languages", "xx"], "no data for language(s) ['xx']"),
        (["lareqa", "--model", "{tiny}", "--model", "{tiny}", "--data", "{squad}"], "duplicate model label"),
        (["lareqa", "--model", "{tiny}", "--name", "a", "--name", "b", "--data", "{squad}"], "2 --name for 1 --model"),
        (["lareqa", "--model", "{tiny}", "--data", "{squad}", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["lareqa", "--model", "{tiny}", "--data", "{empty}", "--split", "test"], "no SQuAD-format"),
        (["beir", "--model", "{tiny}", "--data", "{squad}", "--split", "dev"], "qrels"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_artifact, squad_dir, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nowhere", "tiny": tiny_artifact, "squad": squad_dir, "empty": tmp_path / "empty"}
    assert main([arg.format(**paths) for arg in argv] + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err and not (tmp_path / "r").exists()


def test_bad_split_is_an_argparse_error(tiny_artifact, squad_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lareqa", "--model", str(tiny_artifact), "--data", str(squad_dir), "--split", "dev"])
    assert exit_info.value.code == 2 and "invalid choice: 'dev'" in capsys.readouterr().err


def test_cli_process_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "evaluation", "lareqa", "--model", str(tmp_path / "none")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "artifact.json is missing" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------ cache


class CountingEncoder:
    def __init__(self, fingerprint="fp-1"):
        self.fingerprint = fingerprint
        self.calls = 0

    def encode(self, texts, kind, **kwargs):
        self.calls += 1
        return np.array([[len(t), 1.0 if kind == "query" else 2.0] for t in texts], dtype=np.float32)


def test_cache_key_covers_fingerprint_kind_and_texts(tmp_path):
    encoder = CountingEncoder()
    first = cached_encode(encoder, ["a", "bb"], "query", tmp_path)
    assert np.array_equal(cached_encode(encoder, ["a", "bb"], "query", tmp_path), first) and encoder.calls == 1
    cached_encode(encoder, ["a", "bb"], "passage", tmp_path)
    cached_encode(encoder, ["a bb"], "query", tmp_path)
    # the same texts in another order: a new key, assembled from the first entry without encoding
    assert np.array_equal(cached_encode(encoder, ["bb", "a"], "query", tmp_path), first[[1, 0]])
    assert encoder.calls == 3
    other = CountingEncoder("fp/2")
    cached_encode(other, ["a", "bb"], "query", tmp_path)
    assert other.calls == 1 and (tmp_path / "fp_2").is_dir()
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_cache_recomputes_unreadable_entries_and_can_be_disabled(tmp_path):
    encoder = CountingEncoder()
    path = cache_path(encoder, ["x"], "query", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npy file")
    vectors = cached_encode(encoder, ["x"], "query", tmp_path)
    assert encoder.calls == 1 and np.array_equal(np.load(path), vectors)
    cached_encode(encoder, ["x"], "query", None)
    cached_encode(encoder, ["x"], "query", None)
    assert encoder.calls == 3


def test_cache_assembles_a_subset_from_entries_that_hold_all_its_texts(tmp_path):
    encoder = CountingEncoder()
    full = cached_encode(encoder, ["a", "bb", "ccc"], "passage", tmp_path)
    subset = cached_encode(encoder, ["ccc", "a"], "passage", tmp_path)
    assert encoder.calls == 1 and np.array_equal(subset, full[[2, 0]])
    cached_encode(encoder, ["a", "dddd"], "passage", tmp_path)  # one text unknown: encoded
    cached_encode(encoder, ["a"], "query", tmp_path)  # another kind: encoded
    assert encoder.calls == 3
