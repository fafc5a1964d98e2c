"""Per-language statistics for calibration, estimated from NTREX-128 and written into a model artifact.

    python -m trainer.calibration --model artifacts/models/e5-small-base [--ntrex DIR] [--sentences 500]

NTREX-128 is parallel (the same news sentences in every language), so its per-language means differ by
language and not by topic: what ``center`` and ``subspace`` need to remove. Every precision of the
artifact gets its own statistics (int8 vectors are not fp32's). ``trainer.export`` runs this after export.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.calibration import DEFAULT_SUBSPACE_RANK, ArtifactCalibration, estimate_statistics
from trainer.data import NTREX_LANGUAGES

DEFAULT_NTREX = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "ntrex128"
DEFAULT_SENTENCES = 500  # per language; 300 and all 1,997 give the same dev mAP within 0.003 (docs/calibration.md)


def ntrex_texts(directory: str | Path, sentences: int = DEFAULT_SENTENCES) -> dict[str, list[str]]:
    """The first ``sentences`` non-empty lines of each NTREX-128 language file, by ISO 639-1 code."""
    directory = Path(directory)
    out = {}
    for code, language in NTREX_LANGUAGES.items():
        path = directory / f"newstest2019-ref.{code}.txt"
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            out[language] = lines[:sentences]
    if not out:
        raise FileNotFoundError(f"{directory}: no NTREX-128 newstest2019-ref.<language>.txt files")
    return out


def calibrate_artifact(artifact_dir: str | Path, ntrex_dir: str | Path = DEFAULT_NTREX,
                       sentences: int = DEFAULT_SENTENCES, threads: int | None = None) -> Path:
    """Estimate the statistics for every precision of the artifact and write its ``calibration.json``."""
    from encoder import OnnxEncoder, load_artifact_info

    texts = ntrex_texts(ntrex_dir, sentences)
    info = load_artifact_info(artifact_dir)
    statistics = {}
    for precision in sorted(info.files):
        encoder = OnnxEncoder(artifact_dir, precision, threads=threads)
        print(f"calibration statistics ({precision}): {sum(map(len, texts.values()))} NTREX-128 sentences, "
              f"{len(texts)} languages", file=sys.stderr)
        statistics[precision] = estimate_statistics(encoder, texts)
    source = f"NTREX-128 newstest2019, first {sentences} sentences per language, encoded as passages"
    return ArtifactCalibration(statistics, source, DEFAULT_SUBSPACE_RANK).save(artifact_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model artifact directory")
    parser.add_argument("--ntrex", type=Path, default=DEFAULT_NTREX, help="NTREX-128 directory (default: %(default)s)")
    parser.add_argument("--sentences", type=int, default=DEFAULT_SENTENCES, help="sentences per language")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.sentences < 10:
        parser.error(f"--sentences must be >= 10, got {args.sentences}")
    try:
        path = calibrate_artifact(args.model, args.ntrex, args.sentences, args.threads)
    except (FileNotFoundError, ValueError) as error:
        print(f"python -m trainer.calibration: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
