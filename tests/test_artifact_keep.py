"""``python -m encoder.keep``: an artifact reduced to the precision it serves (what the image ships)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from encoder import OnnxEncoder, load_artifact_info
from encoder.artifact import keep_precisions
from tests.conftest import ROOT


@pytest.fixture
def artifact(tmp_path, tiny_artifact):
    return shutil.copytree(tiny_artifact, tmp_path / "artifact")


def test_keep_int8_drops_fp32_and_keeps_the_int8_fingerprint(artifact):
    before = OnnxEncoder(artifact, "int8")
    vectors, fingerprint = before.encode(["Berlin"], "query"), before.fingerprint
    info = keep_precisions(artifact, ["int8"])
    assert sorted(info.files) == ["int8"] and not (artifact / "model.onnx").exists()
    assert sorted(load_artifact_info(artifact).files) == ["int8"]
    after = OnnxEncoder(artifact, "int8")
    assert after.fingerprint == fingerprint  # indexes built before still open
    assert (after.encode(["Berlin"], "query") == vectors).all()
    with pytest.raises(ValueError, match=r"has no fp32 model \(has \['int8'\]\)"):
        OnnxEncoder(artifact, "fp32")


def test_keep_checks_the_kept_file_and_the_cli_says_what_is_wrong(artifact):
    info = json.loads((artifact / "artifact.json").read_text())
    info["files"]["int8"]["sha256"] = "0" * 64
    (artifact / "artifact.json").write_text(json.dumps(info))
    run = lambda *args: subprocess.run([sys.executable, "-m", "encoder.keep", str(artifact), *args],  # noqa: E731
                                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    failed = run("--precision", "int8")
    assert failed.returncode == 2 and "does not match the sha256" in failed.stderr and "Traceback" not in failed.stderr
    assert (artifact / "model.onnx").exists()  # nothing deleted
    assert run("--precision", "fp32").returncode == 0 and not (artifact / "model.int8.onnx").exists()
    missing = run("--precision", "int8")
    assert missing.returncode == 2 and "cannot keep ['int8']" in missing.stderr
