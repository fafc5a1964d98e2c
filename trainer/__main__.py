"""``python -m trainer train --config configs/hybrid.yaml [--alpha 0.5 --steps 300 ...] [--resume]``
``python -m trainer export runs/hybrid --weights last|best [--out DIR]``
``python -m trainer mine --format ntrex --path DIR --model ARTIFACT --out FILE.jsonl`` (hard negatives)

Multi-process: ``torchrun --standalone --nproc-per-node 2 -m trainer train --config ...``
(gloo on CPU, nccl on GPU; ``batch_size`` is the global batch).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from trainer.config import DATASET_FORMATS, add_override_flags, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="hybrid-batch fine-tuning (arXiv 2408.10536)")
    train.add_argument("--config", help="YAML config file (configs/*.yaml)")
    train.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint.pt")
    train.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                       help="save a checkpoint and exit after STEP steps (continue later with --resume)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_override_flags(train)
    export = commands.add_parser("export", help="export a run's last or best weights to an ONNX artifact")
    export.add_argument("run_dir", help="the run's output_dir (holds checkpoint.pt)")
    export.add_argument("--weights", choices=["last", "best"], default="last")
    export.add_argument("--out", default=None, help="artifact directory (default: <run_dir>/artifact-<weights>)")
    mine = commands.add_parser("mine", help="hard negatives mined with a model artifact -> a jsonl dataset")
    mine.add_argument("--format", required=True, choices=DATASET_FORMATS, help="the dataset's format, as in a config")
    mine.add_argument("--path", required=True, help="the dataset's file or directory")
    mine.add_argument("--name", default=None, help="dataset name (default: from the path)")
    mine.add_argument("--languages", nargs="+", default=None, help="keep only these languages")
    mine.add_argument("--max-groups", type=int, default=None, help="the first N groups only")
    mine.add_argument("--sentences-per-passage", type=int, default=3, help="ntrex: sentences per passage")
    mine.add_argument("--model", required=True, help="the artifact that ranks (the base model: e5-small-base)")
    mine.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    mine.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    mine.add_argument("--negatives", type=int, default=4, help="hard negatives kept per question")
    mine.add_argument("--skip", type=int, default=0, help="highest-ranked non-answers left out")
    mine.add_argument("--out", required=True, help="output .jsonl (a dataset of format jsonl)")
    args = parser.parse_args(argv)
    if args.command == "mine":
        return _mine(args)
    if args.command == "export":
        from trainer.run_export import export_run

        try:
            print(f"wrote {export_run(args.run_dir, args.weights, args.out)}")
        except (ValueError, FileNotFoundError, RuntimeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
        return 0

    from trainer.train import train as run_training

    try:
        result = run_training(config, resume=args.resume, stop_at=args.stop_at)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if rank == 0:
        summary = f"{result.stopped} at step {result.step}; checkpoint in {result.output_dir}"
        if result.best:
            summary += f"; best dev {result.best['metric']} {result.best['value']:.4f} at step {result.best['step']}"
        if result.artifact:
            summary += f"; artifact {result.artifact}"
        print(summary)
    return 130 if result.stopped == "interrupted" else 0


def _mine(args: argparse.Namespace) -> int:
    from encoder import OnnxEncoder
    from trainer.config import DatasetConfig
    from trainer.datasets import load_dataset
    from trainer.mining import MiningSettings, mine_dataset, write_dataset

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = DatasetConfig(args.format, args.path, args.name, None, args.languages, args.max_groups,
                         sentences_per_passage=args.sentences_per_passage)
    settings = MiningSettings(args.negatives, args.skip)
    try:
        spec.validate("dataset")
        settings.validate()
        dataset = load_dataset(spec)
        encoder = OnnxEncoder(args.model, args.precision, threads=args.threads)
        out = write_dataset(mine_dataset(dataset, encoder, settings), args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {dataset.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
