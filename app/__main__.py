"""``python -m app --host 0.0.0.0 --port 8000``: serve babelsearch with uvicorn (the container's command)."""
from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    # Libraries (faiss's loader) stay at WARNING; the service's own logger follows --log-level.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("babelsearch").setLevel(args.log_level.upper())

    import uvicorn

    from app.config import Settings
    from app.main import create_app

    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "BABELSEARCH_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"error: {name}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
        return 2
    app = create_app(settings)
    app.state.service.url = f"http://{args.host}:{args.port}"  # for the "ready on ..." log line
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
