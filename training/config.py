"""The training configuration: one typed dataclass, grouped by purpose. Torch-free: the
command line reads it to build the options of ``rankrm train``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from rankrm.encoding import TruncationSide
from rankrm.opts import Opt
from training.data import DataFormat

LossName = Literal["pairwise", "listwise", "article"]
Switch = Literal["auto", "on", "off"]

# The data options evaluate and export share with train (one definition each).
FORMAT_OPT = Opt(
    "Layout: tsv (one list a line, tab-separated, best first), json (JSON/JSONL ranking lists "
    "or chosen/rejected pairs: TRL, HH, ShareGPT), rated (LABEL<TAB>TEXT or {text, score}), "
    "auto (from extension and content).",
    "Data",
)
HAS_PROMPT_OPT = Opt("tsv: the first column is the prompt.", "Data", "--has-prompt/--no-prompt")
LIST_SIZE_OPT = Opt("rated: texts per list (distinct labels, ordered by label).", "Data", min=2)
SKIP_BAD_OPT = Opt(
    "Skip malformed lines and report how many, instead of stopping.", "Data", "--skip-bad/--strict"
)
SEED_OPT = Opt("Seed for list building, data order and initialisation.", "Run")

DATA, MODEL, OBJECTIVE, OPTIM, RUN = "Data", "Model", "Objective", "Optimisation", "Run"


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the output folder. Each field is
    also its ``rankrm train`` option (see ``rankrm.opts``)."""

    train_file: Annotated[Path, Opt("Training data file.", argument=True)]
    out: Annotated[Path, Opt("Output folder (best/, last/, metrics, plot).", RUN)] = Path("runs/rm")
    # data
    dev_file: Annotated[
        Path | None, Opt("Dev data file for evaluation and model selection.", DATA, "--dev")
    ] = None
    dev_fraction: Annotated[
        float,
        Opt("Without --dev: share of the training lists held out as dev.", DATA, min=0, max=0.5),
    ] = 0.0
    format: Annotated[DataFormat, FORMAT_OPT] = "auto"
    has_prompt: Annotated[bool, HAS_PROMPT_OPT] = False
    list_size: Annotated[int, LIST_SIZE_OPT] = 5
    lists_per_text: Annotated[
        int, Opt("rated: lists anchored on each text (more pairs per epoch).", DATA, min=1)
    ] = 1
    skip_bad: Annotated[bool, SKIP_BAD_OPT] = False
    # model
    backbone: Annotated[
        Path | None,
        Opt("Local Hugging Face model folder. Default: the packaged all-MiniLM-L6-v2.", MODEL),
    ] = None
    max_length: Annotated[int, Opt("Tokens per input (prompt + response).", MODEL, min=8)] = 128
    truncation_side: Annotated[
        TruncationSide,
        Opt(
            "Cut over-long inputs from this end (longest-first between prompt and response).",
            MODEL,
        ),
    ] = "left"
    # objective
    loss: Annotated[
        LossName,
        Opt(
            "pairwise: InstructGPT -log sigmoid over all ordered pairs; listwise: Plackett-Luce; "
            "article: the article's sigmoid-without-log, for reproduction only.",
            OBJECTIVE,
        ),
    ] = "pairwise"
    margin: Annotated[
        float, Opt("pairwise: required reward gap between better and worse.", OBJECTIVE)
    ] = 0.0
    center_coefficient: Annotated[
        float,
        Opt("Weight of the reward-centering term (mean squared reward).", OBJECTIVE, min=0),
    ] = 0.0
    # optimisation
    batch_size: Annotated[
        int, Opt("Ranking lists per micro-batch (per process).", OPTIM, min=1)
    ] = 16
    grad_accum: Annotated[int, Opt("Micro-batches per optimizer step.", OPTIM, min=1)] = 1
    lr: Annotated[float, Opt("Peak AdamW learning rate.", OPTIM)] = 5e-5
    weight_decay: Annotated[float, Opt("AdamW weight decay.", OPTIM)] = 0.01
    warmup_ratio: Annotated[
        float,
        Opt("Share of steps with linear warmup; then linear decay to 0.", OPTIM, min=0, max=0.99),
    ] = 0.1
    epochs: Annotated[float, Opt("Passes over the training lists.", OPTIM)] = 1.0
    max_steps: Annotated[int | None, Opt("Optimizer steps to run; overrides --epochs.", OPTIM)] = (
        None
    )
    max_grad_norm: Annotated[float, Opt("Gradient clipping norm.", OPTIM)] = 1.0
    bf16: Annotated[
        Switch, Opt("bf16 autocast: auto uses it where the CPU supports bf16 natively.", OPTIM)
    ] = "auto"
    seed: Annotated[int, SEED_OPT] = 0
    threads: Annotated[
        int | None, Opt("torch threads per process (default: torch's choice).", RUN)
    ] = None
    # bookkeeping
    eval_every: Annotated[
        int, Opt("Evaluate on dev every N optimizer steps (0: only at the end).", RUN, min=0)
    ] = 100
    save_every: Annotated[
        int, Opt("Write a resumable checkpoint (last/) every N steps.", RUN, min=1)
    ] = 100
    eval_batch_size: Annotated[int, Opt("Texts per forward pass when evaluating.", RUN, min=1)] = 64
    resume: Annotated[bool, Opt("Continue from OUT/last/ (after a crash or kill).", RUN)] = False
    progress: Annotated[bool, Opt("Show a progress bar.", RUN)] = True
    command: Annotated[
        str | None, Opt("The command line that started the run, verbatim.", cli=False)
    ] = None

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
