"""rankrm/runtime.py: an exported folder scored without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rankrm.runtime import OnnxRewardModel

TEXTS = ["good", "a very long movie was good and the plot " * 6, "bad film", "sad", "nice it"]


def test_scores_come_back_in_input_order_whatever_the_batching(model_dir: Path) -> None:
    model = OnnxRewardModel.load(model_dir)
    prompts = [None, "the question", None, "q", None]
    together = model.raw_scores(prompts, TEXTS, batch_size=2)  # sorted by length inside
    alone = [model.raw_scores([p], [t])[0] for p, t in zip(prompts, TEXTS, strict=True)]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.dtype == np.float32 and together.shape == (5,)


def test_normalize_applies_the_manifests_offset_and_scale(model_dir: Path) -> None:
    model = OnnxRewardModel.load(model_dir)
    norm = json.loads((model_dir / "manifest.json").read_text())["normalization"]
    raw = model.raw_scores([None] * len(TEXTS), TEXTS)
    expected = (raw - norm["offset"]) / norm["scale"]
    np.testing.assert_allclose(model.normalize(raw), expected, rtol=1e-6)
