"""Annotation databases (SQLite, and PostgreSQL where one is reachable), task files, the
app served on loopback, and Debian's Chromium driven by Selenium."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from rankrm.annotate.database import make_engine, migrate
from rankrm.annotate.store import Store
from rankrm.annotate.tasks import TaskSpec
from rankrm.annotate.web import AppSettings, create_app
from tests.conftest import start_in_thread

POSTGRES_ENV = "RANKRM_TEST_POSTGRES_URL"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def make_tasks(n: int, k: int = 4, prefix: str = "t") -> list[TaskSpec]:
    return [
        TaskSpec(f"{prefix}{i}", f"prompt {i}", tuple(f"response {i}.{j}" for j in range(k)))
        for i in range(n)
    ]


def write_tasks(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


LOCAL_POSTGRES = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
"""What deploy/test-services.sh (run by .ci/run) starts; RANKRM_TEST_POSTGRES_URL overrides."""


def _postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV) or LOCAL_POSTGRES


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the server ``RANKRM_TEST_POSTGRES_URL`` names, dropped after."""
    url = _postgres_url()
    name = f"rankrm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server named is not there: say so, do not fail
        admin.dispose()
        pytest.skip(
            f"no PostgreSQL at {url.split('@')[-1]} ({str(exc).splitlines()[0]}); "
            f"deploy/test-services.sh starts one, or set {POSTGRES_ENV}"
        )
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes it runs on SQLite and on PostgreSQL (skipped where absent)."""
    if request.param == "sqlite":
        yield str(tmp_path / "annotations.db")
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "annotations.db")


_OPEN: list[Store] = []


def open_store(db: str, **options: Any) -> Store:
    """A store on a migrated database, closed after the test (pass or fail)."""
    engine = make_engine(db)
    migrate(engine)
    store = Store(engine, **options)
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().engine.dispose()


class AppServer:
    def __init__(self, url: str, store: Store) -> None:
        self.url, self.store = url, store


@contextmanager
def serving(store: Store, settings: AppSettings | None = None) -> Iterator[AppServer]:
    """The annotation app on a free loopback port (uvicorn in a thread) until the block ends."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread, port = start_in_thread(server)
    try:
        yield AppServer(f"http://127.0.0.1:{port}", store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.engine.dispose()


def chrome() -> Any:
    """A headless Debian Chromium session, or a skip saying what is missing."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromedriver") is None:
        pytest.skip(
            "Chromium or ChromeDriver not installed (apt-get install chromium chromium-driver; "
            ".ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
