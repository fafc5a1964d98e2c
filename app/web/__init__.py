"""The web page: search, audit and ingest views served from ``app/web/static`` (no build step, no external host)."""
