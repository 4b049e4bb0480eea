"""``rankrm train`` (its options are ``TrainConfig``'s fields) and ``rankrm evaluate``;
training code is imported inside them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rankrm.commands.common import fail, quiet_transformers, with_skip_hint
from rankrm.commands.generate import command_from
from rankrm.commands.options import (
    FormatOpt,
    ListSizeOpt,
    PromptOpt,
    SeedOpt,
    SkipOpt,
)
from training.config import TrainConfig


def _train(given: dict[str, Any]) -> None:
    from training.data import DataError
    from training.train import train as run

    quiet_transformers()
    try:
        config = TrainConfig(**given, command=shlex.join(["rankrm", *sys.argv[1:]]))
        result = run(config)
    except DataError as exc:
        fail(with_skip_hint(exc, given.get("skip_bad")))
        return
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # e.g. no backbone installed
        fail(str(exc))
        return
    summary = {
        "steps": result.steps,
        "best": str(result.best),
        "last": str(result.last),
        "metrics": str(result.metrics_file),
        "plot": str(result.plot),
        "best_dev": result.best_metrics,
    }
    typer.echo(json.dumps(summary, indent=2))


train = command_from(
    TrainConfig,
    _train,
    """Train a reward model from ranking lists (all C(K,2) pairs of a list at once).

    Runs data-parallel when launched with torchrun, e.g.
    ``torchrun --nproc-per-node 2 -m rankrm train data.jsonl``.
    """,
)


def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (e.g. runs/rm/best).", show_default=False)
    ],
    data_file: Annotated[
        Path, typer.Argument(help="Data file to evaluate on.", show_default=False)
    ],
    format: FormatOpt = "auto",
    has_prompt: PromptOpt = False,
    list_size: ListSizeOpt = 5,
    skip_bad: SkipOpt = False,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    output: Annotated[
        Path | None, typer.Option(help="Also write the metrics to this JSON file.")
    ] = None,
) -> None:
    """Pairwise accuracy, exact-order accuracy, Kendall tau, margin and reward statistics."""
    from training.data import DataError, load_lists
    from training.evaluate import evaluate_lists
    from training.model import load_reward_model

    quiet_transformers()
    try:
        data = load_lists(
            data_file,
            format,
            has_prompt=has_prompt,
            list_size=list_size,
            seed=seed,
            skip_bad=skip_bad,
        )
        metrics = evaluate_lists(load_reward_model(checkpoint), data.lists, batch_size)
    except (DataError, ValueError, FileNotFoundError, OSError) as exc:
        fail(str(exc))
        return
    report = {
        "checkpoint": str(checkpoint),
        "data": str(data_file),
        "skipped": len(data.skipped),
        **metrics,
    }
    text = json.dumps(report, indent=2)
    if output is not None:
        output.write_text(text + "\n")
    typer.echo(text)
