"""``python -m trainer train --config configs/hybrid.yaml [--alpha 0.5 --steps 300 ...] [--resume]``
``python -m trainer export runs/hybrid --weights last|best [--out DIR]``

Multi-process: ``torchrun --standalone --nproc-per-node 2 -m trainer train --config ...``
(gloo on CPU, nccl on GPU; ``batch_size`` is the global batch).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from trainer.config import add_override_flags, load_config


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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
