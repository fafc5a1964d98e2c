"""Command line: build (resumable), inspect and edit an index.

    python -m indexes build --model ARTIFACT_DIR --input docs.jsonl --out INDEX_DIR [--index-type flat|hnsw|ivf]
                            [--precision int8|fp32] [--chunk-size 256] [--batch-size 32] [--threads N]
    python -m indexes info INDEX_DIR
    python -m indexes delete INDEX_DIR ID [ID ...]

``build`` reads and checks the whole file first (nothing is written if a row is bad), then commits it in
chunks. Documents already stored with the same text, language, group and metadata are skipped, so
rerunning the same command after Ctrl-C (or a crash) continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from indexes.collection import Collection
from indexes.documents import read_jsonl
from indexes.languages import detect_languages
from indexes.locks import IndexBusyError
from indexes.manifest import describe
from indexes.shards import INDEX_TYPES


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def build(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from encoder import OnnxEncoder

    documents = list(read_jsonl(args.input))
    if not documents:
        raise CliError(f"{args.input} holds no documents")
    unique = {doc.id: doc for doc in documents}
    if len(unique) < len(documents):
        print(f"note: {len(documents) - len(unique)} repeated ids in {args.input}; the last row of each wins", file=sys.stderr)
    documents = list(unique.values())

    encoder = OnnxEncoder(args.model, precision=args.precision, threads=args.threads)
    collection = Collection.open(args.out, encoder, index_type=args.index_type)  # refuses another encoder's index
    totals = {"added": 0, "replaced": 0, "unchanged": 0}
    try:
        stored = collection.unchanged_ids(documents)
        todo = [doc for doc in documents if doc.id not in stored]
        totals["unchanged"] = len(stored)
        if stored:
            print(f"{len(stored)} of {len(documents)} documents already stored unchanged; {len(todo)} to go", file=sys.stderr)
        _detect_missing_languages(todo, args.input)
        with tqdm(total=len(todo), desc="index", unit="doc") as bar:
            for start in range(0, len(todo), args.chunk_size):
                result = collection.add(todo[start : start + args.chunk_size], batch_size=args.batch_size,
                                        skip_unchanged=True)
                for name in totals:
                    totals[name] += result[name]
                bar.update(min(args.chunk_size, len(todo) - start))
    except KeyboardInterrupt:
        collection.close()
        print(f"\ninterrupted: {totals['added'] + totals['replaced']} documents committed to {args.out}; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    except BaseException:
        collection.close()
        raise
    manifest = collection.manifest
    collection.close()
    print(f"{args.out}: {totals['added']} added, {totals['replaced']} replaced, {totals['unchanged']} unchanged; "
          f"{manifest['documents']} documents in {len(manifest['languages'])} languages "
          f"({manifest['index_type']}, encoder {manifest['encoder_fingerprint']})")
    return 0


def _detect_missing_languages(documents: list, source: Path, chunk: int = 1000) -> None:
    """Fill in missing languages before anything is written: one undetectable text stops the build."""
    from tqdm.auto import tqdm

    unlabelled = [doc for doc in documents if doc.language is None]
    if not unlabelled:
        return
    detected: list = []
    for start in tqdm(range(0, len(unlabelled), chunk), desc=f"detect languages ({len(unlabelled)} docs)", unit="chunk"):
        detected += detect_languages([doc.text for doc in unlabelled[start : start + chunk]])
    failed = [doc.id for doc, language in zip(unlabelled, detected) if language is None]
    if failed:
        raise CliError(
            f"cannot detect the language of {len(failed)} document(s) in {source} "
            f"(ids {', '.join(map(repr, failed[:5]))}); give them a \"language\""
        )
    for doc, language in zip(unlabelled, detected):
        doc.language = language


def info(args: argparse.Namespace) -> int:
    print(json.dumps(describe(args.index), indent=2, ensure_ascii=False))
    return 0


def delete(args: argparse.Namespace) -> int:
    with Collection.open(args.index, None, index_type=None, create=False) as collection:
        ids = list(dict.fromkeys(args.ids))
        present = [doc_id for doc_id in ids if collection.get(doc_id) is not None]
        deleted = collection.delete(present)
        remaining = len(collection)
    print(f"deleted {deleted} of {len(ids)} documents; {remaining} remain")
    missing = [doc_id for doc_id in ids if doc_id not in present]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m indexes", description="Build and inspect babelsearch indexes.")
    commands = root.add_subparsers(dest="command", required=True)

    p = commands.add_parser("build", help="embed a JSONL file of documents into an index (resumable)")
    p.add_argument("--model", required=True, help="model artifact directory (artifact.json, model*.onnx)")
    p.add_argument("--input", required=True, type=Path, help="JSONL: {id, text, language?, group?, metadata?, title?}")
    p.add_argument("--out", required=True, type=Path, help="index directory (created if missing)")
    p.add_argument("--index-type", choices=INDEX_TYPES, default=None,
                   help="flat (exact, default for a new index), hnsw or ivf; default keeps an existing index's type")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    p.add_argument("--chunk-size", type=int, default=256, help="documents per transaction")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encoder call")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.set_defaults(run=build)

    p = commands.add_parser("info", help="print the manifest and counts of an index as JSON")
    p.add_argument("index", type=Path)
    p.set_defaults(run=info)

    p = commands.add_parser("delete", help="delete documents by id")
    p.add_argument("index", type=Path)
    p.add_argument("ids", nargs="+")
    p.set_defaults(run=delete)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "chunk_size", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        print("error: --chunk-size and --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (CliError, FileNotFoundError, ValueError, IndexBusyError) as exc:  # IndexMismatchError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
