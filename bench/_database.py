"""A migrated database for a benchmark: the URL given, or a fresh SQLite file in a temp dir."""
from __future__ import annotations

import tempfile

from sqlalchemy import create_engine

from renewdesk.migrate import upgrade


def migrated(url: str | None = None, name: str = "bench.db") -> str:
    """Bring ``url`` (default: a new SQLite file) to the current schema and return it."""
    url = url or f"sqlite:///{tempfile.mkdtemp()}/{name}"
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url
