"""What ``rankrm export`` is asked (:class:`ExportConfig`) and answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from rankrm.manifest import Manifest
from rankrm.opts import Opt
from training.config import SEED_OPT
from training.data import DataFormat
from training.errors import ExportError

__all__ = ["ExportConfig", "ExportError", "ExportReport", "Precision"]

Precision = Literal["none", "int8", "fp16"]


@dataclass
class ExportConfig:
    """Options of ``rankrm export``: each field with an ``Opt`` is also its command-line
    option (``rankrm.opts``); the others are for code."""

    checkpoint: Annotated[Path, Opt("Checkpoint folder (e.g. runs/rm/best).", argument=True)]
    out: Annotated[Path, Opt("Model folder to write (replaced atomically).")] = Path("models/rm")
    quantize: Annotated[
        Precision,
        Opt(
            "int8: per-channel int8 weights and per-token int8 activations (batch-invariant); "
            "fp16: half precision for GPUs (serve with provider=cuda); either is refused if it "
            "misses the bars on held-out data."
        ),
    ] = "none"
    reference: Annotated[
        Path | None,
        Opt("Texts for the checks and the reward offset. Default: the run's training file."),
    ] = None
    eval_file: Annotated[
        Path | None,
        Opt("Held-out lists for the int8 decision and the card. Default: the run's dev file.",
            flag="--eval"),
    ] = None  # fmt: skip
    test_file: Annotated[
        Path | None, Opt("Test lists, reported in the card only.", flag="--test")
    ] = None
    format: Annotated[DataFormat | None, Opt("Layout of the data files. Default: the run's.")] = (
        None
    )
    has_prompt: Annotated[
        bool | None,
        Opt("tsv: the first column is the prompt. Default: the run's.",
            flag="--has-prompt/--no-prompt"),
    ] = None  # fmt: skip
    list_size: Annotated[int | None, Opt("rated: texts per list. Default: the run's.", min=2)] = (
        None
    )
    skip_bad: Annotated[
        bool | None,
        Opt("Skip malformed records (reported) instead of stopping. Default: the run's.",
            flag="--skip-bad/--strict"),
    ] = None  # fmt: skip
    scale_rewards: Annotated[
        bool, Opt("Also divide rewards by their standard deviation on the reference set.")
    ] = False
    optimize: Annotated[
        bool, Opt("Fuse the graph with onnxruntime's transformer optimizer where it applies.")
    ] = True
    force: Annotated[
        bool, Opt("Write an int8 model that misses the bars (flagged in manifest and card).")
    ] = False
    name: Annotated[str | None, Opt("Model name. Default: the folder name.")] = None
    seed: Annotated[int, SEED_OPT] = 0
    threads: Annotated[int | None, Opt("onnxruntime threads.")] = None
    max_reference_texts: int = 10_000
    check_texts: int = 48
    max_length: Annotated[
        int | None,
        Opt("Tokens the served model reads at most. Default: what the run trained with; "
            "128 for a model from elsewhere (a chat reward model usually wants more)."),
    ] = None  # fmt: skip
    # A multi-output head: each output's weight in the reward, by name (default: the mean);
    # on the command line, repeated --head-weight NAME=WEIGHT (rankrm/commands/export.py).
    head_weights: dict[str, float] | None = None


@dataclass
class ExportReport:
    """What the export wrote and measured."""

    folder: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
