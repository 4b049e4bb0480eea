"""app/engine.py: the ONNX engine the batcher drives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
