"""bench/bench_encoder.py's own parts, without its models or peer venvs: the FLOP count, the GEMM peak
measurement, the int8 kind, reuse of committed mAP reports, missing peers, and the worker's protocol."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_encoder", ROOT / "bench" / "bench_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_text_is_the_documented_formula(bench):
    d, f, n = 384, 1536, 12
    flops = bench.flops_per_text([10, 100], d, f, n)
    assert flops[0] == n * (2 * 10 * (4 * d * d + 2 * d * f) + 4 * 10 * 10 * d)
    assert flops[1] == pytest.approx(12 * (200 * (4 * 384 ** 2 + 2 * 384 * 1536) + 4 * 100 ** 2 * 384))
    assert 0.04e9 < flops[0] / 10 < 0.05e9  # e5-small: about 43 MFLOP per token at short lengths


def test_gemm_peaks_measure_every_shape(bench):
    shapes = bench.gemm_shapes(8, 16, 32)
    assert shapes == [(8, 16, 32), (8, 32, 16), (8, 16, 16)]
    for rows in (bench.numpy_fp32_peak(shapes, 0.01), *(bench.ort_peak(shapes, kind, 1, 0.01) for kind in ("fp32", "u8", "s8"))):
        assert [r["shape"] for r in rows] == shapes
        assert all(r["gflops"] > 0 for r in rows)


def test_int8_kind_of_the_exported_model(bench, tiny_artifact):
    assert bench.int8_kind(tiny_artifact / "model.int8.onnx") == "dynamic"  # trainer.export: quantize_dynamic
    assert bench.int8_kind(tiny_artifact / "model.onnx") == "?"


def _report(tmp_path: Path, fingerprint: str, data: Path, split="test", calibration=None, languages="de en") -> Path:
    model = {"fingerprint": fingerprint, "results": {"multilingual_map": 0.5, "mono_map": 0.8, "cross_map": 0.7}}
    if calibration:
        model["calibration"] = calibration
    folder = tmp_path / "reports" / f"{split}-{calibration}-{languages.replace(' ', '')}"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({
        "benchmark": "lareqa", "settings": {"data": str(data), "split": split, "languages": languages},
        "models": {f"m [{calibration}]" if calibration else "m": model}}))
    return folder


def test_a_committed_report_is_reused_only_for_the_same_model_file_and_setting(bench, tmp_path):
    data = tmp_path / "xquad-r"
    data.mkdir()
    _report(tmp_path, "abc-fp32-r2", data, split="all")
    _report(tmp_path, "abc-fp32-r2", data, calibration="center")
    _report(tmp_path, "abc-fp32-r2", data, languages="en")
    assert bench._reusable(tmp_path / "reports", "abc-fp32-r2", data, ["de", "en"]) is None
    _report(tmp_path, "abc-fp32-r2", data, calibration="none")
    found = bench._reusable(tmp_path / "reports", "abc-fp32-r2", data, ["de", "en"])
    assert found["results"]["mono_map"] == 0.8 and "test-none-deen" in found["source"]
    assert bench._reusable(tmp_path / "reports", "abc-fp32-r3", data, ["de", "en"]) is None  # another runtime


def test_an_engine_whose_venv_is_missing_is_listed_not_run(bench, tmp_path, tiny_artifact, monkeypatch):
    from encoder.artifact import load_artifact_info

    monkeypatch.setattr(bench, "PEERS", tmp_path / "no-peers")
    args = Namespace(batch_size=4, threads=1, worker_timeout=10, engines=list(bench.ENGINES))
    rows = bench.plan_rows(args, tiny_artifact, load_artifact_info(tiny_artifact), tmp_path / "st", tmp_path,
                           tmp_path / "dynamic", "dynamic", {})
    skipped = {row["name"]: row.get("skip") for row in rows}
    assert skipped["st-onnx"] == skipped["fastembed"] == bench.NOT_INSTALLED
    assert skipped["ort-fp32"] is None and skipped["ort-int8-static"] is None
    assert bench._label(rows[2]["label"], None) == "sentence-transformers (ONNX, ORT)"


@pytest.mark.parametrize("per_call", [False, True])
def test_the_worker_writes_the_encoders_vectors_and_its_timings(tiny_artifact, tmp_path, per_call):
    from encoder import OnnxEncoder

    texts = ["Berlin ist die Hauptstadt.", "柏林是德国的首都。", "a", "Helsinki is the capital of Finland.", "x y z"]
    (tmp_path / "texts.json").write_text(json.dumps({"kind": "passage", "prefix": "passage: ", "texts": texts}))
    command = [sys.executable, str(ROOT / "bench" / "peers" / "encode_worker.py"), "--engine", "ort", "--model",
               str(tiny_artifact), "--precision", "fp32", "--texts", str(tmp_path / "texts.json"), "--out",
               str(tmp_path / "out"), "--threads", "1", "--batch-size", "2", "--repeats", "2"]
    subprocess.run(command + (["--per-call"] if per_call else []), check=True, cwd=ROOT)
    vectors = np.load(tmp_path / "out" / "vectors.npy")
    expected = OnnxEncoder(tiny_artifact, precision="fp32", threads=1, batch_size=2).encode(texts, "passage")
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert len(timings["seconds"]) == 2 and timings["texts"] == len(texts)
    assert timings["session_runs"] == (len(texts) if per_call else 3)
