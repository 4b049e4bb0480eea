"""bench/serve_bench.py's onnxruntime-alone rate counts whole passes over the workload."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_bench.py"


@pytest.fixture(scope="module")
def serve_bench() -> Iterator[ModuleType]:
    """The script as a module (bench/ is not a package); its dataclasses need it in
    sys.modules while it loads."""
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_bench"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["serve_bench"]


class Text:
    def __init__(self, number: int) -> None:
        self.number = number
        self.ids = [0] * (1 + number % 7)


class Recorder:
    """A model that notes every text it scores."""

    def __init__(self) -> None:
        self.scored: Counter[int] = Counter()
        self.lock = threading.Lock()

    def run_encodings(self, batch: list[Any]) -> None:
        with self.lock:
            self.scored.update(text.number for text in batch)


@pytest.mark.parametrize("callers", [1, 2, 3])
def test_every_text_is_scored_as_often_as_any_other(serve_bench: ModuleType, callers: int) -> None:
    texts = sorted((Text(i) for i in range(50)), key=lambda t: len(t.ids))
    model = Recorder()
    rate = serve_bench.raw_rate(model, texts, 8, 0.05, callers)  # 7 batches, the last of 2
    counts = set(model.scored.values())
    assert len(model.scored) == 50
    assert len(counts) == 1 and counts.pop() >= 1  # whole passes, never a pass cut short
    assert rate > 0


def test_one_pass_when_the_time_is_up_before_it_ends(serve_bench: ModuleType) -> None:
    model = Recorder()
    serve_bench.passes_rate(model, [[Text(i)] for i in range(5)], 0.0, 2)
    assert model.scored == Counter(range(5))
