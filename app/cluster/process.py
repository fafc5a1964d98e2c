"""What each Serve replica process sets up before it loads anything, as ``python -m app`` does for its one
process: glibc's fixed malloc thresholds and the service's logger. (FAISS/OpenMP threads come from the
``OMP_NUM_THREADS`` that the deployments' runtime environment sets, since OpenMP reads it when it loads.)"""
from __future__ import annotations

import logging
import os

LOG_LEVEL_VARIABLE = "BABELSEARCH_LOG_LEVEL"  # set by `python -m app.cluster --log-level` for the replicas


def prepare_process() -> None:
    from app.__main__ import return_freed_memory

    return_freed_memory()
    logger = logging.getLogger("babelsearch")
    if not logger.handlers:  # Ray's worker processes configure only Ray's loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(os.environ.get(LOG_LEVEL_VARIABLE, "info").upper())
