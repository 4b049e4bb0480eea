"""``rankrm export``: a checkpoint to an ONNX model folder."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rankrm.commands.common import fail, quiet_transformers, with_skip_hint
from rankrm.commands.options import SeedOpt
from training.data import DataFormat


class Quantize(StrEnum):
    """Export precision."""

    none = "none"
    int8 = "int8"
    fp16 = "fp16"


def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (e.g. runs/rm/best).", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write (replaced atomically).")] = (
        Path("models/rm")
    ),
    quantize: Annotated[
        Quantize,
        typer.Option(
            help="int8: per-channel int8 weights and per-token int8 activations (batch-invariant); "
            "fp16: half precision for GPUs (serve with provider=cuda); either is refused if it "
            "misses the bars on held-out data."
        ),
    ] = Quantize.none,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Texts for the checks and the reward offset. Default: the run's training file."
        ),
    ] = None,
    eval_file: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Held-out lists for the int8 decision and the card. Default: the run's dev file.",
        ),
    ] = None,
    test_file: Annotated[
        Path | None, typer.Option("--test", help="Test lists, reported in the card only.")
    ] = None,
    format: Annotated[
        DataFormat | None, typer.Option(help="Layout of the data files. Default: the run's.")
    ] = None,
    has_prompt: Annotated[
        bool | None,
        typer.Option(
            "--has-prompt/--no-prompt",
            help="tsv: the first column is the prompt. Default: the run's.",
            show_default=False,
        ),
    ] = None,
    list_size: Annotated[
        int | None,
        typer.Option(min=2, help="rated: texts per list. Default: the run's.", show_default=False),
    ] = None,
    skip_bad: Annotated[
        bool | None,
        typer.Option(
            "--skip-bad/--strict",
            help="Skip malformed records (reported) instead of stopping. Default: the run's.",
            show_default=False,
        ),
    ] = None,
    scale_rewards: Annotated[
        bool,
        typer.Option(help="Also divide rewards by their standard deviation on the reference set."),
    ] = False,
    optimize: Annotated[
        bool,
        typer.Option(
            help="Fuse the graph with onnxruntime's transformer optimizer where it applies."
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            help="Write an int8 model that misses the bars (flagged in manifest and card)."
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Model name. Default: the folder name.")] = None,
    seed: SeedOpt = 0,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads.")] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Tokens the served model reads at most. Default: what the run trained with; "
            "128 for a model from elsewhere (a chat reward model usually wants more)."
        ),
    ] = None,
    head_weight: Annotated[
        list[str] | None,
        typer.Option(
            help="A multi-output head (num_labels > 1): NAME=WEIGHT of one output in the "
            "reward, repeatable (outputs not named weigh 0). Default: the mean of all outputs.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a checkpoint to ONNX with its tokenizer, manifest and model card, checked
    against torch (parity, batch invariance, loading without torch) before it is written.

    Any local AutoModelForSequenceClassification folder works (TRL's and OpenRLHF's reward
    models included); a tokenizer with a chat template makes the served model read
    conversations through it."""
    from training.data import DataError
    from training.errors import TrainingError
    from training.export import ExportConfig, export_model

    quiet_transformers()
    config = ExportConfig(
        checkpoint=checkpoint,
        out=out,
        quantize=quantize.value,
        reference=reference,
        eval_file=eval_file,
        test_file=test_file,
        format=format,
        has_prompt=has_prompt,
        list_size=list_size,
        skip_bad=skip_bad,
        scale_rewards=scale_rewards,
        optimize=optimize,
        force=force,
        name=name,
        seed=seed,
        threads=threads,
        max_length=max_length,
        head_weights=_head_weights(head_weight or []),
    )
    try:
        report = export_model(config)
    except DataError as exc:
        fail(with_skip_hint(exc, skip_bad))
        return
    except (TrainingError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))  # TrainingError: export's own refusals; the rest: the checkpoint's
        return
    summary = {
        "folder": str(report.folder),
        "files": report.manifest.files,
        "quantization": report.manifest.quantization,
        "checks": report.manifest.checks,
        "evaluation": report.manifest.evaluation,
        "timings_s": report.timings,
    }
    typer.echo(json.dumps(summary, indent=2))


def _head_weights(given: list[str]) -> dict[str, float] | None:
    """``--head-weight NAME=WEIGHT`` values as a mapping (None when none are given)."""
    weights: dict[str, float] = {}
    for i, item in enumerate(given):
        name, sep, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name or not math.isfinite(weight):
            fail(f"--head-weight #{i + 1}: {item!r} is not NAME=WEIGHT (a finite number)")
        weights[name] = weight
    return weights or None
