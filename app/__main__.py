"""``python -m app --host 0.0.0.0 --port 8000``: serve babelsearch with uvicorn (the container's command)."""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys

from pydantic import ValidationError


def return_freed_memory() -> None:
    """Fixed 128 KiB malloc thresholds (glibc's defaults, which it raises after each large free). Raised,
    the ~90 MB of buffers freed while the model loads (the ONNX file, the tokenizer's JSON) stay resident:
    serving RSS 801-807 MB against 716-717 MB fixed, same search and ingest speed (docs/deploy.md). Left
    alone when MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ is set, and off glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)
    except (OSError, AttributeError):
        pass


def set_threads() -> None:
    """Threads, set once for the process before numpy and FAISS load (OpenMP reads OMP_NUM_THREADS when it
    loads; ``omp_set_num_threads`` later would only change the calling thread). FAISS and the OpenBLAS it
    bundles run one thread per calling thread: searches are parallel across request threads, and one query
    gains nothing from a thread team, which on busy cores costs up to ~100 ms to wake (indexes.shards). The
    encoder's threads are ONNX Runtime's intra-op pool (BABELSEARCH_THREADS), used by the one encoder worker
    (app.batching). An OMP_NUM_THREADS already set is kept."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def read_settings():
    """The ``BABELSEARCH_*`` settings, or None after printing each bad one as ``error: NAME: why (got ...)``."""
    from app.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "BABELSEARCH_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"error: {name}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    return_freed_memory()  # before the model loads
    set_threads()  # before numpy and faiss are imported (app.config, app.main)
    # Libraries (faiss's loader) stay at WARNING; the service's own logger follows --log-level.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("babelsearch").setLevel(args.log_level.upper())

    import uvicorn

    from app.main import create_app

    settings = read_settings()
    if settings is None:
        return 2
    app = create_app(settings)
    app.state.service.url = f"http://{args.host}:{args.port}"  # for the "ready on ..." log line
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
