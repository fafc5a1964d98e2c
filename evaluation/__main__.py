"""Evaluate model artifacts offline and write a report.

    python -m evaluation lareqa --model artifacts/models/e5-small-base [--model OTHER ...] [--split test]
    python -m evaluation beir   --model artifacts/models/e5-small-base --data DIR --split dev
    python -m evaluation compare RUN_A RUN_B      (B - A per LAReQA figure: paired 95% CI and p)
    python -m evaluation seeds   RUN [RUN ...]    (mean and sd of each figure over training seeds)

Embeddings are cached under ``var/cache/embeddings`` (``--cache-dir``), so re-running is fast.
The Markdown table goes to stdout; progress and file paths to stderr.
"""
from __future__ import annotations

import argparse
import json
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
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="{lareqa,beir,compare,seeds}")

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

    lareqa = commands.add_parser(
        "lareqa", help="LAReQA protocol on XQuAD-R-format data (mono/cross/multilingual mAP)",
        description="LAReQA protocol on XQuAD-R-format data. Writes report.json, report.md and plots to --out, and "
                    "per report row the ranks of every query's answers to <out>/per_query/<label>[-<calibration>]"
                    ".jsonl.gz (the calibration suffix when several are given), the input of `compare` and `seeds`.")
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
    _significance_parsers(commands)
    return parser


RUN_HELP = ("A run is a per-query file (<report>/per_query/<label>[-<calibration>].jsonl.gz, written by "
            "`lareqa`) or a report directory (with --row when it has several rows)")


def _significance_parsers(commands) -> None:
    compare = commands.add_parser(
        "compare", help="B - A per LAReQA figure with a paired bootstrap CI and permutation p (by question id)",
        description="B - A for every LAReQA figure, with a 95% CI from a paired cluster bootstrap over question "
                    "ids (all of a question's queries, in every language, resampled together) and a two-sided "
                    "paired sign-flip permutation p (A and B swapped per question id). Several runs per side "
                    "(--a/--b: training seeds) are averaged per query first. " + RUN_HELP + ".")
    compare.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="RUN_A RUN_B (or use --a/--b)")
    for side in ("a", "b"):
        compare.add_argument(f"--{side}", nargs="+", type=Path, default=None, metavar="RUN",
                             help=f"side {side.upper()}: one run, or several (training seeds, averaged per query)")
    compare.add_argument("--resamples", type=int, default=10_000,
                         help="bootstrap resamples, and as many sign flips (default: %(default)s)")
    compare.add_argument("--seed", type=int, default=0, help="random seed of both procedures (default: %(default)s)")
    seeds = commands.add_parser("seeds", help="mean and sd of each LAReQA figure over runs (training seeds)",
                                description="Mean, sample sd, min and max of each LAReQA figure over several runs "
                                            "of one recipe, evaluated on the same queries. " + RUN_HELP + ".")
    seeds.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    for sub in (compare, seeds):
        sub.add_argument("--row", default=None, metavar="LABEL",
                         help="row of every report directory given: its label in report.json (e.g. 'base [center]') "
                              "or its per-query file name without .jsonl.gz (e.g. base-center)")
        sub.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON")


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
                               query_languages=query_languages, per_query=True)
    from evaluation.beir import evaluate_beir

    return evaluate_beir(encoder, data, k=args.k, **embedding)


def _write_per_query(out: Path, label: str, method: str | None, rows: list[dict], taken: set[Path]) -> str:
    """The per-query ranks of one report row (what `compare` tests on); returns the path within ``out``."""
    from evaluation.significance import per_query_path, write_per_query

    path = write_per_query(per_query_path(out, label, method, taken), rows)
    print(f"per-query ranks: {path}", file=sys.stderr)
    return path.relative_to(out).as_posix()


def run(args) -> dict:
    from evaluation.report import beir_table, lareqa_table, write_report

    labels = _labels(args)
    _check_inputs(args)
    data = _load_data(args)
    print(f"{args.benchmark} {args.data} ({args.split}): {data.summary()}", file=sys.stderr)
    methods = getattr(args, "calibration", ["none"])
    detected = None
    out = args.out or Path("reports") / f"{args.benchmark}-{args.split}"
    per_query_files: set[Path] = set()
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
            if args.benchmark == "lareqa":
                models[name]["per_query"] = _write_per_query(out, label, method if len(methods) > 1 else None,
                                                             results.pop("per_query"), per_query_files)
    settings = {
        "data": str(args.data), "split": args.split, "precision": args.precision,
        "languages": " ".join(data.languages) if args.benchmark == "lareqa" else None,
        "k": getattr(args, "k", None),
        "calibration": " ".join(methods), "query_language": getattr(args, "query_language", "given"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m evaluation " + " ".join(args.argv),
    }
    paths = write_report(args.benchmark, models, out, settings)
    print((lareqa_table if args.benchmark == "lareqa" else beir_table)(models), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return models


def _load_runs(specs: list[Path], row: str | None) -> list:
    from evaluation.significance import InputError, load_run

    try:
        return [load_run(spec, row) for spec in specs]
    except InputError as error:
        raise UsageError(str(error)) from None


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


def run_compare(args) -> dict:
    """`compare`: B - A with its cluster-bootstrap CI and sign-flip p (``evaluation.significance``)."""
    from evaluation.significance import InputError, compare, comparison_markdown

    if args.runs and (args.a or args.b):
        raise UsageError("give RUN_A RUN_B or --a/--b, not both")
    if not args.runs and not (args.a and args.b):
        raise UsageError("give RUN_A RUN_B, or --a RUN [RUN ...] --b RUN [RUN ...]")
    if args.runs and len(args.runs) != 2:
        raise UsageError(f"expected two runs (RUN_A RUN_B), got {len(args.runs)}; several seeds go with --a/--b")
    if args.resamples < 1:
        raise UsageError(f"--resamples must be >= 1, got {args.resamples}")
    side_a, side_b = ([args.runs[0]], [args.runs[1]]) if args.runs else (args.a, args.b)
    runs_a, runs_b = _load_runs(side_a, args.row), _load_runs(side_b, args.row)
    try:
        result = compare([r.scores for r in runs_a], [r.scores for r in runs_b], args.resamples, args.seed)
    except InputError as error:
        raise UsageError(str(error)) from None
    result["labels_a"], result["labels_b"] = [r.label for r in runs_a], [r.label for r in runs_b]
    print(comparison_markdown(result, runs_a, runs_b), end="")
    _write_json(args.json, result)
    return result


def run_seeds(args) -> dict:
    """`seeds`: each figure's mean and sd over several runs of one recipe."""
    from evaluation.significance import InputError, seed_summary, seeds_markdown

    runs = _load_runs(args.runs, args.row)
    try:
        summary = seed_summary([r.scores for r in runs])
    except InputError as error:
        raise UsageError(str(error)) from None
    print(seeds_markdown(summary, runs), end="")
    _write_json(args.json, {"runs": [r.scores.source for r in runs], "labels": [r.label for r in runs],
                            "n_queries": len(runs[0].scores.keys), "metrics": summary})
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        {"compare": run_compare, "seeds": run_seeds}.get(args.benchmark, run)(args)
    except UsageError as error:
        print(f"python -m evaluation {args.benchmark}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
