"""Command line: build (resumable, locally or on Ray), inspect and edit an index.

    python -m indexes build --model ARTIFACT_DIR --input docs.jsonl|docs.parquet --out INDEX_DIR
                            [--index-type auto|flat|hnsw|ivf] [--precision int8|fp32] [--chunk-size 256]
                            [--batch-size 32] [--threads N | --ray [--address HOST:PORT] [--actors 2]
                            [--threads-per-actor 1]]
    python -m indexes info INDEX_DIR
    python -m indexes delete INDEX_DIR ID [ID ...]

``build`` reads and checks the whole file first (nothing is written if a row is bad), then commits it in
chunks. Documents already stored with the same text, language, group and metadata are skipped, so
rerunning the same command after Ctrl-C (or a crash) continues where it stopped. ``--ray`` encodes on an
actor pool of a Ray cluster (``--address``; without it, a local Ray instance) and this process writes what
comes back (``indexes.ray_build``); the result is the local build's.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Generator, Iterator

import numpy as np

from indexes.collection import Collection
from indexes.documents import Document, MissingExtraError, read_documents
from indexes.languages import detect_languages
from indexes.locks import IndexBusyError
from indexes.manifest import describe
from indexes.ray_build import DriverEncoder, encode_with_ray  # Ray itself: lazily
from indexes.ray_session import RayClusterError, ray_session
from indexes.shards import INDEX_TYPES


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def build(args: argparse.Namespace) -> int:
    from encoder import OnnxEncoder

    documents = _read_input(args.input)
    encoder = DriverEncoder(args.model, args.precision) if args.ray else \
        OnnxEncoder(args.model, precision=args.precision, threads=args.threads)
    with ExitStack() as stack:
        if args.ray:  # before the collection opens: a cluster that cannot be reached leaves nothing behind
            stack.enter_context(ray_session(args.address, args.actors * args.threads_per_actor))
        collection = Collection.open(args.out, encoder, index_type=args.index_type)  # refuses another encoder's index
        totals = {"added": 0, "replaced": 0, "unchanged": 0}
        try:
            todo = _still_to_do(collection, documents, totals)
            _detect_missing_languages(todo, args.input)
            chunks = _ray_chunks(args, encoder.fingerprint, todo) if args.ray else _local_chunks(todo, args.chunk_size)
            _commit(collection, chunks, len(todo), args.batch_size, totals)
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


def _read_input(path: Path) -> list[Document]:
    """Every document of the input file, checked; the last row of a repeated id wins."""
    documents = list(read_documents(path))
    if not documents:
        raise CliError(f"{path} holds no documents")
    unique = {doc.id: doc for doc in documents}
    if len(unique) < len(documents):
        print(f"note: {len(documents) - len(unique)} repeated ids in {path}; the last row of each wins", file=sys.stderr)
    return list(unique.values())


def _still_to_do(collection: Collection, documents: list[Document], totals: dict) -> list[Document]:
    """The documents not yet stored as they are (what makes a rerun continue where the last run stopped)."""
    stored = collection.unchanged_ids(documents)
    todo = [doc for doc in documents if doc.id not in stored]
    totals["unchanged"] = len(stored)
    if stored:
        print(f"{len(stored)} of {len(documents)} documents already stored unchanged; {len(todo)} to go", file=sys.stderr)
    return todo


def _commit(collection: Collection, chunks: Generator[tuple[list[Document], np.ndarray | None], None, None],
            total: int, batch_size: int, totals: dict) -> None:
    """One transaction per chunk (its vectors, or None: the collection encodes), counted in ``totals`` and on
    the progress bar as committed."""
    from tqdm.auto import tqdm

    # closed here, even on Ctrl-C while a chunk commits: a Ray build's iterator ends before its Ray session does
    with tqdm(total=total, desc="index", unit="doc") as bar, closing(chunks):
        for chunk, vectors in chunks:
            result = collection.add(chunk, batch_size=batch_size, skip_unchanged=True, vectors=vectors)
            for name in totals:
                totals[name] += result[name]
            bar.update(len(chunk))


def _local_chunks(documents: list[Document], size: int) -> Iterator[tuple[list[Document], None]]:
    """Chunks for Collection.add to encode itself (no vectors)."""
    for start in range(0, len(documents), size):
        yield documents[start : start + size], None


def _ray_chunks(args: argparse.Namespace, fingerprint: str, documents: list[Document]
                ) -> Iterator[tuple[list[Document], np.ndarray]]:
    return encode_with_ray(documents, args.model, args.precision, fingerprint, actors=args.actors,
                           threads_per_actor=args.threads_per_actor, batch_size=args.batch_size,
                           chunk_size=args.chunk_size)


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

    p = commands.add_parser("build", help="embed a JSONL or Parquet file of documents into an index (resumable)")
    p.add_argument("--model", required=True, help="model artifact directory (artifact.json, model*.onnx)")
    p.add_argument("--input", required=True, type=Path,
                   help="JSONL ({id, text, language?, group?, metadata?, title?} a line) or .parquet (those columns)")
    p.add_argument("--out", required=True, type=Path, help="index directory (created if missing)")
    p.add_argument("--index-type", choices=INDEX_TYPES, default=None,
                   help="auto (a new index's default: flat shards up to 300,000 passages in all, then ivf), flat (exact), "
                        "hnsw or ivf; unset keeps an existing index's type")
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    p.add_argument("--chunk-size", type=int, default=256, help="documents per transaction")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encoder call")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    ray = p.add_argument_group("distributed build (pip install .[ray])")
    ray.add_argument("--ray", action="store_true", help="encode on a Ray actor pool; this process writes the index")
    ray.add_argument("--address", default=None, metavar="HOST:PORT",
                     help="the Ray cluster to use (implies --ray; default: start a local Ray instance)")
    ray.add_argument("--actors", type=int, default=None, help="encoder actors (default 2)")
    ray.add_argument("--threads-per-actor", type=int, default=None, help="ONNX Runtime threads (and CPUs) per actor "
                     "(default 1)")
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
    problem = _build_usage_problem(args) if args.command == "build" else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (CliError, FileNotFoundError, ValueError, IndexBusyError, MissingExtraError, RayClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # IndexMismatchError is a ValueError
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _build_usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``build``'s options, checked before anything is read or started; fills in the Ray
    defaults."""
    if args.chunk_size < 1 or args.batch_size < 1:
        return "--chunk-size and --batch-size must be >= 1"
    args.ray = args.ray or args.address is not None
    if not args.ray:
        if args.actors is not None or args.threads_per_actor is not None:
            return "--actors and --threads-per-actor are for a Ray build: add --ray (or --address)"
        return None
    if args.threads is not None:
        return "--threads sets a local build's encoder; a Ray build takes --threads-per-actor"
    args.actors = 2 if args.actors is None else args.actors
    args.threads_per_actor = 1 if args.threads_per_actor is None else args.threads_per_actor
    if args.actors < 1 or args.threads_per_actor < 1:
        return "--actors and --threads-per-actor must be >= 1"
    return None
