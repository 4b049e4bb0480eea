"""``rankrm train`` and ``rankrm evaluate``: training code is imported inside them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from rankrm.commands.options import (
    DATA,
    MODEL,
    OBJECTIVE,
    OPTIM,
    RUN,
    Format,
    FormatOpt,
    ListSizeOpt,
    Loss,
    PromptOpt,
    SeedOpt,
    Side,
    SkipOpt,
    Switch,
    fail,
    quiet_transformers,
    with_skip_hint,
)


def train(
    train_file: Annotated[Path, typer.Argument(help="Training data file.", show_default=False)],
    out: Annotated[
        Path, typer.Option(help="Output folder (best/, last/, metrics, plot).", rich_help_panel=RUN)
    ] = Path("runs/rm"),
    dev: Annotated[
        Path | None,
        typer.Option(
            help="Dev data file for evaluation and model selection.", rich_help_panel=DATA
        ),
    ] = None,
    dev_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Without --dev: share of the training lists held out as dev.",
            rich_help_panel=DATA,
        ),
    ] = 0.0,
    format: FormatOpt = Format.auto,
    has_prompt: PromptOpt = False,
    list_size: ListSizeOpt = 5,
    lists_per_text: Annotated[
        int,
        typer.Option(
            min=1,
            help="rated: lists anchored on each text (more pairs per epoch).",
            rich_help_panel=DATA,
        ),
    ] = 1,
    skip_bad: SkipOpt = False,
    backbone: Annotated[
        Path | None,
        typer.Option(
            help="Local Hugging Face model folder. Default: the packaged all-MiniLM-L6-v2.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    max_length: Annotated[
        int,
        typer.Option(min=8, help="Tokens per input (prompt + response).", rich_help_panel=MODEL),
    ] = 128,
    truncation_side: Annotated[
        Side,
        typer.Option(
            help="Cut over-long inputs from this end (longest-first between prompt and response).",
            rich_help_panel=MODEL,
        ),
    ] = Side.left,
    loss: Annotated[
        Loss,
        typer.Option(
            help="pairwise: InstructGPT -log sigmoid over all ordered pairs; listwise: "
            "Plackett-Luce; article: the article's sigmoid-without-log, for reproduction only.",
            rich_help_panel=OBJECTIVE,
        ),
    ] = Loss.pairwise,
    margin: Annotated[
        float,
        typer.Option(
            help="pairwise: required reward gap between better and worse.",
            rich_help_panel=OBJECTIVE,
        ),
    ] = 0.0,
    center_coefficient: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of the reward-centering term (mean squared reward).",
            rich_help_panel=OBJECTIVE,
        ),
    ] = 0.0,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, help="Ranking lists per micro-batch (per process).", rich_help_panel=OPTIM
        ),
    ] = 16,
    grad_accum: Annotated[
        int, typer.Option(min=1, help="Micro-batches per optimizer step.", rich_help_panel=OPTIM)
    ] = 1,
    lr: Annotated[
        float, typer.Option(help="Peak AdamW learning rate.", rich_help_panel=OPTIM)
    ] = 5e-5,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay.", rich_help_panel=OPTIM)
    ] = 0.01,
    warmup_ratio: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Share of steps with linear warmup; then linear decay to 0.",
            rich_help_panel=OPTIM,
        ),
    ] = 0.1,
    epochs: Annotated[
        float, typer.Option(help="Passes over the training lists.", rich_help_panel=OPTIM)
    ] = 1.0,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Optimizer steps to run; overrides --epochs.", rich_help_panel=OPTIM),
    ] = None,
    max_grad_norm: Annotated[
        float, typer.Option(help="Gradient clipping norm.", rich_help_panel=OPTIM)
    ] = 1.0,
    bf16: Annotated[
        Switch,
        typer.Option(
            help="bf16 autocast: auto uses it where the CPU supports bf16 natively.",
            rich_help_panel=OPTIM,
        ),
    ] = Switch.auto,
    seed: SeedOpt = 0,
    threads: Annotated[
        int | None,
        typer.Option(
            help="torch threads per process (default: torch's choice).", rich_help_panel=RUN
        ),
    ] = None,
    eval_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Evaluate on dev every N optimizer steps (0: only at the end).",
            rich_help_panel=RUN,
        ),
    ] = 100,
    save_every: Annotated[
        int,
        typer.Option(
            min=1, help="Write a resumable checkpoint (last/) every N steps.", rich_help_panel=RUN
        ),
    ] = 100,
    eval_batch_size: Annotated[
        int,
        typer.Option(min=1, help="Texts per forward pass when evaluating.", rich_help_panel=RUN),
    ] = 64,
    resume: Annotated[
        bool,
        typer.Option(help="Continue from OUT/last/ (after a crash or kill).", rich_help_panel=RUN),
    ] = False,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar.", rich_help_panel=RUN)
    ] = True,
) -> None:
    """Train a reward model from ranking lists (all C(K,2) pairs of a list at once).

    Runs data-parallel when launched with torchrun, e.g.
    ``torchrun --nproc-per-node 2 -m rankrm train data.jsonl``.
    """
    from training.config import TrainConfig
    from training.data import DataError
    from training.train import train as run

    quiet_transformers()
    try:
        config = TrainConfig(
            train_file=train_file,
            out=out,
            dev_file=dev,
            dev_fraction=dev_fraction,
            format=format.value,
            has_prompt=has_prompt,
            list_size=list_size,
            lists_per_text=lists_per_text,
            skip_bad=skip_bad,
            backbone=backbone,
            max_length=max_length,
            truncation_side=truncation_side.value,
            loss=loss.value,
            margin=margin,
            center_coefficient=center_coefficient,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            epochs=epochs,
            max_steps=max_steps,
            max_grad_norm=max_grad_norm,
            bf16=bf16.value,
            seed=seed,
            threads=threads,
            eval_every=eval_every,
            save_every=save_every,
            eval_batch_size=eval_batch_size,
            resume=resume,
            progress=progress,
            command=shlex.join(["rankrm", *sys.argv[1:]]),
        )
        result = run(config)
    except DataError as exc:
        fail(with_skip_hint(exc, skip_bad))
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


def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (e.g. runs/rm/best).", show_default=False)
    ],
    data_file: Annotated[
        Path, typer.Argument(help="Data file to evaluate on.", show_default=False)
    ],
    format: FormatOpt = Format.auto,
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
            format.value,
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
