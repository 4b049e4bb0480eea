"""The training configuration: one typed dataclass, grouped by purpose."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from training.data import DataFormat
from training.losses import LossName


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the output folder."""

    # data
    train_file: Path
    out: Path
    dev_file: Path | None = None
    dev_fraction: float = 0.0  # held out of train_file when no dev_file is given
    format: DataFormat = "auto"
    has_prompt: bool = False  # tsv: the first column is the prompt
    list_size: int = 5  # rated data: texts per list
    lists_per_text: int = 1  # rated data: lists anchored on each text
    skip_bad: bool = False  # drop malformed lines (reported) instead of stopping
    # model
    backbone: Path | None = None  # default: packaged all-MiniLM-L6-v2
    max_length: int = 128
    truncation_side: Literal["left", "right"] = "left"
    # objective
    loss: LossName = "pairwise"
    margin: float = 0.0
    center_coefficient: float = 0.0
    # optimisation
    batch_size: int = 16  # ranking lists per micro-batch per process
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_grad_norm: float = 1.0
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    threads: int | None = None
    # bookkeeping
    eval_every: int = 100  # optimizer steps; 0 evaluates only at the end
    save_every: int = 100  # optimizer steps between resumable checkpoints
    eval_batch_size: int = 64
    resume: bool = False
    progress: bool = True
    command: str | None = None  # the command line that started the run, verbatim

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "list_size", "lists_per_text", "max_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.eval_every < 0 or self.save_every < 1:
            raise ValueError("eval_every must be >= 0 and save_every >= 1")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def save(self, path: Path) -> None:
        """Write the config as JSON."""
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the fields a user sets (the CLI test checks each is an option);
        ``command`` is recorded by the CLI itself."""
        return [f.name for f in fields(cls) if f.name != "command"]


def train_command(run: dict[str, Any]) -> str:
    """The command that reproduces the run: as it was typed when the CLI started it, else
    rebuilt from its configuration (every option that differs from the default)."""
    if not run:
        return "(the checkpoint has no run configuration next to it)"
    if run.get("command"):
        return str(run["command"])
    defaults = TrainConfig(train_file=Path(run["train_file"]), out=Path(run["out"])).to_json()
    skip = {"out", "train_file", "progress", "resume", "command"}
    args = [f"rankrm train {run['train_file']}", f"--out {run['out']}"]
    for key, value in run.items():
        if key in skip or value == defaults.get(key) or value is None or value is False:
            continue
        flag = "--dev" if key == "dev_file" else "--" + key.replace("_", "-")
        args.append(flag if value is True else f"{flag} {value}")
    return " \\\n    ".join(args)
