"""Open the annotation database and bring its schema to the newest revision.

``--db`` takes a SQLAlchemy URL (``postgresql+psycopg://user@host/db``, ``sqlite:///file``)
or a plain file path, which means SQLite. SQLite runs in WAL mode with every transaction
begun ``IMMEDIATE``: writers queue for the lock (up to ``busy_timeout``) instead of failing
half-way, so several annotators at once are safe. PostgreSQL relies on the schema's unique
constraints (see ``schema``) and retries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect

BUSY_TIMEOUT_MS = 30_000


def database_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as given, a path as a SQLite file."""
    if "://" in db:
        return db
    if db in ("", ":memory:"):
        raise ValueError("--db needs a file or a URL: an in-memory database would lose the work")
    return f"sqlite:///{Path(db).expanduser().absolute()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event emits BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(db: str) -> Engine:
    """An engine for ``--db`` (see :func:`database_url`)."""
    url = database_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest alembic revision (a new database gets all of it)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say nothing new
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None before the first migration)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        row = connection.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return None if row is None else str(row[0])
