"""A PNG of training loss and dev accuracy, drawn from ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt

SMOOTHING = 0.9  # weight of the past in the loss curve's moving average (TensorBoard's 0.6-0.99)


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, bias-corrected so the curve starts at the first value."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def accuracy_lines(
    pairwise: Sequence[float], exact: Sequence[float]
) -> list[tuple[str, Sequence[float]]]:
    """The dev accuracy curves to draw: both, or one when they coincide (lists of two
    responses, as in pairwise data: getting the one pair right is getting the order right)."""
    if len(pairwise) == len(exact) and all(
        abs(p - e) < 1e-12 for p, e in zip(pairwise, exact, strict=True)
    ):
        return [("pairwise = exact-order accuracy (lists of 2)", pairwise)]
    return [("pairwise accuracy", pairwise), ("exact-order accuracy", exact)]


def plot_metrics(metrics_file: Path, out: Path) -> None:
    """Draw loss against step (left; raw faint, smoothed bold) and dev pairwise and
    exact-order accuracy (right)."""
    train_steps, losses, eval_steps, pairwise, exact = [], [], [], [], []
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            train_steps.append(row["step"])
            losses.append(row["loss"])
        if "dev_pairwise_accuracy" in row:
            eval_steps.append(row["step"])
            pairwise.append(row["dev_pairwise_accuracy"])
            exact.append(row["dev_exact_order_accuracy"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(train_steps, losses, lw=0.8, alpha=0.3, color="C0", label="loss")
    left.plot(train_steps, smoothed(losses), lw=1.8, color="C0", label=f"smoothed ({SMOOTHING})")
    left.set(title="training loss", xlabel="optimizer step", ylabel="loss")
    left.legend(loc="upper right")
    for (label, values), marker in zip(accuracy_lines(pairwise, exact), "os", strict=False):
        right.plot(eval_steps, values, marker=marker, label=label)
    right.set(title="dev accuracy", xlabel="optimizer step", ylim=(0, 1))
    right.legend(loc="lower right")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
