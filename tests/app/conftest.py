"""A tiny exported model, an engine tests can slow down or break, and real servers on
loopback (uvicorn in a thread)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from app import fastlane
from app.config import Settings
from app.engine import OnnxEngine
from app.main import create_app
from app.server import Server as HttpServer
from rankrm.encoding import Tokens
from rankrm.runtime import OnnxRewardModel
from tests.conftest import start_in_thread


class ControlledEngine(OnnxEngine):
    """The real engine, plus knobs: a delay per batch, a poison word, a log of batches."""

    def __init__(self, model: OnnxRewardModel) -> None:
        super().__init__(model)
        self.delay_s = 0.0
        self.poison: str | None = None
        self.batches: list[list[tuple[int, ...]]] = []
        self.started = threading.Event()
        self.hold = threading.Event()  # cleared: a batch waits in run() until it is set
        self.hold.set()
        self.running = 0  # batches in run() now
        self.most_running = 0  # ... at most, so far
        self._count = threading.Lock()

    def run(self, encodings: Sequence[Tokens], *, lone: bool = False) -> np.ndarray:
        with self._count:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.batches.append([tuple(e.ids) for e in encodings])
            self.started.set()
            self.hold.wait(30)
            if self.delay_s:
                time.sleep(self.delay_s)
            poison = self.model.tokenizer.token_to_id(self.poison) if self.poison else None
            if poison is not None and any(poison in e.ids for e in encodings):
                raise RuntimeError("poisoned batch")
            return super().run(encodings, lone=lone)
        finally:
            with self._count:
                self.running -= 1


@pytest.fixture
def engine(model_dir: Path) -> ControlledEngine:
    return ControlledEngine(OnnxRewardModel.load(model_dir))


class Server:
    """A running service: ``url``, its ``app`` and ``engine``."""

    def __init__(self, url: str, app: Any, engine: ControlledEngine) -> None:
        self.url = url
        self.app = app
        self.engine = engine


@contextmanager
def running(engine: ControlledEngine, **settings: Any) -> Iterator[Server]:
    """Serve ``engine`` with ``settings`` on a free loopback port until the block ends.

    One model worker unless ``model_workers`` is given: tests of queueing then know what is
    in the model and what waits (tests of several workers say so)."""
    settings.setdefault("model_workers", 1)
    others = settings.pop("others", None)
    config = Settings(model_dir=Path("unused"), **settings)
    application = create_app(config, engine, others)
    server = HttpServer(
        uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning", lifespan="on"),
        config.head_limits(),
        config.max_connections,
        application.state.shortcut,
    )
    thread, port = start_in_thread(server)
    try:
        yield Server(f"http://127.0.0.1:{port}", application, engine)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def server(engine: ControlledEngine) -> Iterator[Server]:
    with running(engine) as s:
        yield s


def body(data: Any) -> str:
    return json.dumps(data)


@pytest.fixture(scope="session", autouse=True)
def conformance_report() -> Iterator[None]:
    """With RANKRM_CONFORMANCE_REPORT set (make conformance), write the matrix the
    conformance tests filled, once they have all run."""
    yield
    report = os.environ.get("RANKRM_CONFORMANCE_REPORT")
    if report:
        from tests.app.conformance import write_report

        write_report(report)


@pytest.fixture
def shortcut_taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the protocol's shortcut took."""
    taken: list[str] = []
    original = fastlane.Shortcut.start

    def spy(self: fastlane.Shortcut, scope: Any, *args: Any) -> Any:
        answer = original(self, scope, *args)
        if answer is not None:
            taken.append(scope["path"])
        return answer

    monkeypatch.setattr(fastlane.Shortcut, "start", spy)
    return taken
