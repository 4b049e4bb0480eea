"""The training plot: a smoothed loss, and one accuracy line where the two coincide."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from training.plot import accuracy_lines, plot_metrics, smoothed


def test_the_smoothed_loss_starts_at_the_first_value_and_follows_the_trend() -> None:
    values = [4.0, 2.0, 3.0, 1.0, 2.0, 0.0, 1.0, 0.0]
    curve = smoothed(values, 0.5)
    assert curve[0] == 4.0
    assert curve[-1] < curve[0]
    assert max(abs(b - a) for a, b in itertools.pairwise(curve)) < max(
        abs(b - a) for a, b in itertools.pairwise(values)
    )  # steadier than the raw curve
    assert smoothed([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)


def test_pairwise_data_draws_one_accuracy_line_and_says_why() -> None:
    (only,) = accuracy_lines([0.6, 0.7], [0.6, 0.7])
    assert only[0] == "pairwise = exact-order accuracy (lists of 2)"
    assert [label for label, _ in accuracy_lines([0.8, 0.9], [0.3, 0.4])] == [
        "pairwise accuracy",
        "exact-order accuracy",
    ]


def test_the_plot_is_written(tmp_path: Path) -> None:
    rows = [{"step": s, "loss": 1 / s} for s in range(1, 30)]
    rows += [{"step": 10, "dev_pairwise_accuracy": 0.7, "dev_exact_order_accuracy": 0.7}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_metrics(metrics, tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "training.tmp.png").exists()
