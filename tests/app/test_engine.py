"""app/engine.py: the ONNX engine the batcher drives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.engine import OnnxEngine
from rankrm.encoding import render_messages
from rankrm.runtime import OnnxRewardModel


def test_chat_and_text_prompts_in_one_call_encode_as_each_would_alone(model_dir: Path) -> None:
    engine = OnnxEngine(OnnxRewardModel.load(model_dir))
    chat = [{"role": "user", "content": "the question"}]
    mixed = engine.encode(["plain prompt", chat, None], ["good", "nice film", "bad"])
    alone = [
        engine.encode(["plain prompt"], ["good"])[0],
        engine.encode([render_messages(chat)], ["nice film"])[0],  # no chat template here
        engine.encode([None], ["bad"])[0],
    ]
    assert [list(t.ids) for t in mixed] == [list(t.ids) for t in alone]


def test_run_scores_encodings_as_the_runtime_does(model_dir: Path) -> None:
    model = OnnxRewardModel.load(model_dir)
    engine = OnnxEngine(model)
    encodings = engine.encode([None, None], ["good film", "a dull film and a bad plot"])
    rewards = np.asarray(engine.run(encodings)).reshape(2, -1)[:, 0]
    expected = model.raw_scores([None, None], ["good film", "a dull film and a bad plot"])
    np.testing.assert_allclose(rewards, expected, atol=1e-5)


def test_the_measured_call_overhead_and_the_info_are_sane(model_dir: Path) -> None:
    engine = OnnxEngine(OnnxRewardModel.load(model_dir))
    assert engine.call_overhead_tokens() >= 0
    info = engine.info()
    assert info["providers"] == ["CPUExecutionProvider"]
    assert set(info["normalization"]) >= {"offset", "scale"}


def test_a_lone_batch_runs_on_every_core_with_the_same_rewards(model_dir: Path) -> None:
    """The lone-batch session is the same file with more threads: bit for bit the same
    rewards, alone or in a batch."""
    settings = Settings(model_dir=model_dir, model_workers=2, lone_threads=2)
    engine = OnnxEngine.from_settings(settings)
    assert engine.lone is not None
    assert engine.lone.session.get_session_options().intra_op_num_threads == 2
    assert engine.model.session.get_session_options().intra_op_num_threads == 1
    texts = ["good film", "a dull film and a bad plot", "fine", "the acting was superb"]
    encodings = engine.encode([None] * len(texts), texts)
    batched = engine.run(encodings)
    np.testing.assert_array_equal(engine.run(encodings, lone=True), batched)
    for i, one in enumerate(encodings):
        np.testing.assert_array_equal(engine.run([one], lone=True), batched[i : i + 1])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"model_workers": 2}, "cores"),  # the workers share the cores out
        ({"model_workers": 1}, 0),  # one worker has every core already
        ({"model_workers": 2, "threads": 1}, 0),  # threads set by hand: left as set
        ({"model_workers": 2, "provider": "cuda"}, 0),  # a GPU is not shared out by threads
        ({"model_workers": 2, "lone_threads": 0}, 0),  # off
        ({"model_workers": 1, "lone_threads": 3}, 3),  # as set
    ],
)
def test_the_lone_batch_session_is_there_where_cores_are_shared_out(
    options: dict[str, Any], expected: int | str
) -> None:
    settings = Settings(model_dir=Path("unused"), **options)
    cores = os.cpu_count() or 1
    want = (cores if cores > 1 else 0) if expected == "cores" else expected
    assert settings.lone_thread_count == want


def test_without_lone_threads_there_is_one_session(model_dir: Path) -> None:
    engine = OnnxEngine.from_settings(Settings(model_dir=model_dir, lone_threads=0))
    assert engine.lone is None
    encodings = engine.encode([None], ["good film"])
    np.testing.assert_array_equal(engine.run(encodings, lone=True), engine.run(encodings))
