"""Evaluate model artifacts offline and write a report.

    python -m evaluation lareqa --model artifacts/models/e5-small-base [--model OTHER ...] [--split test]
    python -m evaluation beir   --model artifacts/models/e5-small-base --data DIR --split dev

Embeddings are cached under ``var/cache/embeddings`` (``--cache-dir``), so re-running is fast.
The Markdown table goes to stdout; progress and file paths to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from evaluation.cache import DEFAULT_CACHE_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LAREQA_DATA = REPO_ROOT.parent / "shared" / "data" / "xquad-r"
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its inputs: reported in one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="{lareqa,beir}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", action="append", required=True, type=Path, metavar="ARTIFACT_DIR",
                         help="model artifact directory (repeat to compare models)")
        sub.add_argument("--name", action="append", default=None,
                         help="label per --model, in the same order (default: the artifact directory name)")
        sub.add_argument("--precision", choices=["int8", "fp32"], default="int8")
        sub.add_argument("--out", type=Path, default=None, help="report directory (default: reports/<benchmark>-<split>)")
        sub.add_argument("--batch-size", type=int, default=None, help="texts per ONNX Runtime batch")
        sub.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
        sub.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="embedding cache (default: %(default)s)")
        sub.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")

    lareqa = commands.add_parser("lareqa", help="LAReQA protocol on XQuAD-R-format data (mono/cross/multilingual mAP)")
    common(lareqa)
    lareqa.add_argument("--data", type=Path, default=DEFAULT_LAREQA_DATA, help="XQuAD-R-format directory (default: %(default)s)")
    lareqa.add_argument("--split", choices=["all", "train", "test"], default="all",
                        help="articles of split.json to use (default: all)")
    lareqa.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="restrict to these languages (space- or comma-separated)")
    lareqa.add_argument("--calibration", nargs="+", default=["none"], choices=["none", "center", "subspace"],
                        metavar="METHOD", help="none, center, subspace; several give one row each (default: none)")
    lareqa.add_argument("--query-language", choices=["given", "detected"], default="given",
                        help="calibrate each query with its given language, or with the one the service's "
                             "detector finds (unsure: the language-free fallback) (default: given)")

    beir = commands.add_parser("beir", help="BEIR/TREC-format retrieval (nDCG@10, Recall@k, MRR@10)")
    common(beir)
    beir.add_argument("--data", type=Path, required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/")
    beir.add_argument("--split", default="dev", help="qrels/<split>.tsv to evaluate (default: dev)")
    beir.add_argument("--k", type=int, default=100, help="retrieval depth for Recall@k (default: 100)")
    return parser


def _labels(args) -> list[str]:
    if args.name is not None and len(args.name) != len(args.model):
        raise UsageError(f"{len(args.name)} --name for {len(args.model)} --model; give one per model or none")
    labels = args.name or [path.resolve().name for path in args.model]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"duplicate model label(s) {duplicates}: tell them apart with --name")
    return labels


def _check_inputs(args) -> None:
    for path in args.model:
        if not (path / "artifact.json").is_file():
            raise UsageError(f"not a model artifact: {path / 'artifact.json'} is missing "
                             "(build one with `make model` or `python -m trainer.export`)")
    if not args.data.is_dir():
        raise UsageError(f"data directory not found: {args.data}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if getattr(args, "k", 10) < 10:
        raise UsageError(f"--k must be >= 10, got {args.k}")


def _load_data(args):
    try:
        if args.benchmark == "lareqa":
            from evaluation.lareqa import load_lareqa

            languages = None
            if args.languages:
                languages = [code for item in args.languages for code in item.split(",") if code]
            return load_lareqa(args.data, split=args.split, languages=languages)
        from evaluation.beir import load_beir

        return load_beir(args.data, split=args.split)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise UsageError(f"cannot load {args.data}: {error}") from None


def _encoder(path: Path, args):
    from encoder import OnnxEncoder

    try:
        return OnnxEncoder(path, precision=args.precision, threads=args.threads)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None


def _artifact_statistics(path: Path, encoder):
    from encoder.calibration import ArtifactCalibration

    calibration = ArtifactCalibration.load(path, encoder.dim)
    return calibration.statistics.get(encoder.precision) if calibration is not None else None


def _detected_languages(data, languages: list[str]) -> list[str | None]:
    # The service's detector, restricted as the service restricts it; imported only for this option.
    from indexes.languages import LanguageDetector

    detector = LanguageDetector(languages)
    print(f"detecting the language of {len(data.queries)} queries ...", file=sys.stderr)
    return [detection.language for detection in detector.detect_many(data.queries)]


def _evaluate(args, encoder, data, method: str = "none", statistics=None, query_languages=None) -> dict:
    embedding = {"cache_dir": None if args.no_cache else args.cache_dir, "progress": not args.no_progress,
                 "batch_size": args.batch_size}
    if args.benchmark == "lareqa":
        from evaluation.lareqa import evaluate_lareqa

        return evaluate_lareqa(encoder, data, **embedding, calibration=method, statistics=statistics,
                               query_languages=query_languages)
    from evaluation.beir import evaluate_beir

    return evaluate_beir(encoder, data, k=args.k, **embedding)


def run(args) -> dict:
    from evaluation.report import beir_table, lareqa_table, write_report

    labels = _labels(args)
    _check_inputs(args)
    data = _load_data(args)
    print(f"{args.benchmark} {args.data} ({args.split}): {data.summary()}", file=sys.stderr)
    methods = getattr(args, "calibration", ["none"])
    detected = None
    models: dict[str, dict] = {}
    for label, path in zip(labels, args.model):
        encoder = _encoder(path, args)
        statistics = _artifact_statistics(path, encoder) if methods != ["none"] else None
        if getattr(args, "query_language", "given") == "detected" and detected is None:
            known = sorted(set(data.languages) | set(statistics.languages if statistics else []))
            detected = _detected_languages(data, known)
        for method in methods:
            started = time.perf_counter()
            name = label if len(methods) == 1 else f"{label} [{method}]"
            print(f"[{name}] {path} ({args.precision}, {encoder.fingerprint})", file=sys.stderr)
            results = _evaluate(args, encoder, data, method, statistics, detected)
            models[name] = {"artifact": str(path), "precision": args.precision, "fingerprint": encoder.fingerprint,
                            "base_model": encoder.info.base_model, "calibration": method,
                            "seconds": round(time.perf_counter() - started, 1), "results": results}
    settings = {
        "data": str(args.data), "split": args.split, "precision": args.precision,
        "languages": " ".join(data.languages) if args.benchmark == "lareqa" else None,
        "k": getattr(args, "k", None),
        "calibration": " ".join(methods), "query_language": getattr(args, "query_language", "given"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m evaluation " + " ".join(args.argv),
    }
    out = args.out or Path("reports") / f"{args.benchmark}-{args.split}"
    paths = write_report(args.benchmark, models, out, settings)
    print((lareqa_table if args.benchmark == "lareqa" else beir_table)(models), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return models


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        run(args)
    except UsageError as error:
        print(f"python -m evaluation {args.benchmark}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
