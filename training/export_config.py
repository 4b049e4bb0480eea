"""What ``rankrm export`` is asked (:class:`ExportConfig`) and answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rankrm.manifest import Manifest
from training.data import DataFormat
from training.errors import ExportError

__all__ = ["ExportConfig", "ExportError", "ExportReport", "Precision"]

Precision = Literal["none", "int8", "fp16"]


@dataclass
class ExportConfig:
    """Options of ``rankrm export``."""

    checkpoint: Path
    out: Path
    quantize: Precision = "none"
    reference: Path | None = None  # default: the training file of the checkpoint's run
    eval_file: Path | None = None  # held-out lists; default: the run's dev file
    test_file: Path | None = None  # reported only, never used for a decision
    format: DataFormat | None = None  # default: the run's
    has_prompt: bool | None = None
    list_size: int | None = None
    skip_bad: bool | None = None  # default: the run's (skipped records are logged)
    scale_rewards: bool = False
    optimize: bool = True
    force: bool = False  # write an int8/fp16 model that misses the bars, flagged as such
    name: str | None = None
    seed: int = 0
    threads: int | None = None
    max_reference_texts: int = 10_000
    check_texts: int = 48
    max_length: int | None = None  # default: the checkpoint's recorded encoding, else 128
    # A multi-output head: each output's weight in the reward, by name (default: the mean)
    head_weights: dict[str, float] | None = None


@dataclass
class ExportReport:
    """What the export wrote and measured."""

    folder: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
