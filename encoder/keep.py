"""``python -m encoder.keep ARTIFACT_DIR --precision int8``: keep one precision of a model artifact.

Deletes the other precisions' ONNX files and their entries in ``artifact.json`` after checking the kept
file's sha256 (``encoder.artifact.keep_precisions``): the serving image ships only what it serves.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.artifact import PRECISIONS, keep_precisions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoder.keep", description=__doc__.split("\n\n")[1])
    parser.add_argument("directory", type=Path, help="model artifact directory")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, required=True, help="precision(s) to keep")
    args = parser.parse_args(argv)
    try:
        info = keep_precisions(args.directory, args.precision)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.directory}: kept {', '.join(sorted(info.files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
