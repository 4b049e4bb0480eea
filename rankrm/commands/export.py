"""``rankrm export``: a checkpoint to an ONNX model folder."""

from __future__ import annotations

import inspect
import json
import math
from typing import Annotated, Any

import typer

from rankrm.commands.common import fail, quiet_transformers, with_skip_hint
from rankrm.commands.generate import command_from
from training.export_config import ExportConfig

HEAD_WEIGHT = inspect.Parameter(
    "head_weight",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    default=None,
    annotation=Annotated[
        list[str] | None,
        typer.Option(
            help="A multi-output head (num_labels > 1): NAME=WEIGHT of one output in the "
            "reward, repeatable (outputs not named weigh 0). Default: the mean of all outputs.",
            show_default=False,
        ),
    ],
)


def _export(given: dict[str, Any]) -> None:
    from training.data import DataError
    from training.errors import TrainingError
    from training.export import export_model

    quiet_transformers()
    weights = _head_weights(given.pop("head_weight") or [])
    config = ExportConfig(**given, head_weights=weights)
    try:
        report = export_model(config)
    except DataError as exc:
        fail(with_skip_hint(exc, config.skip_bad))
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


export = command_from(
    ExportConfig,
    _export,
    """Export a checkpoint to ONNX with its tokenizer, manifest and model card, checked
    against torch (parity, batch invariance, loading without torch) before it is written.

    Any local AutoModelForSequenceClassification folder works (TRL's and OpenRLHF's reward
    models included); a tokenizer with a chat template makes the served model read
    conversations through it.""",
    extra=[HEAD_WEIGHT],
)
