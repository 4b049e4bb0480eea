"""A PNG of training loss and dev accuracy, drawn from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt


def plot_metrics(metrics_file: Path, out: Path) -> None:
    """Draw loss against step (left) and dev pairwise/exact-order accuracy (right)."""
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
    left.plot(train_steps, losses, lw=1)
    left.set(title="training loss", xlabel="optimizer step", ylabel="loss")
    right.plot(eval_steps, pairwise, marker="o", label="pairwise accuracy")
    right.plot(eval_steps, exact, marker="s", label="exact-order accuracy")
    right.set(title="dev accuracy", xlabel="optimizer step", ylim=(0, 1))
    right.legend(loc="lower right")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
