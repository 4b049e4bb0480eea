"""What the commands share: option types, help panels and one way to fail."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer


class Format(StrEnum):
    """Input layouts (see ``training.data``)."""

    auto = "auto"
    tsv = "tsv"
    json = "json"
    rated = "rated"


class Loss(StrEnum):
    """Ranking losses (see ``training.losses``)."""

    pairwise = "pairwise"
    listwise = "listwise"
    article = "article"


class Switch(StrEnum):
    """auto / on / off."""

    auto = "auto"
    on = "on"
    off = "off"


class Side(StrEnum):
    """Which end of an over-long input is cut."""

    left = "left"
    right = "right"


DATA = "Data"
MODEL = "Model"
OBJECTIVE = "Objective"
OPTIM = "Optimisation"
RUN = "Run"

FormatOpt = Annotated[
    Format,
    typer.Option(
        help="Layout: tsv (one list a line, tab-separated, best first), json (JSON/JSONL "
        "ranking lists or chosen/rejected pairs: TRL, HH, ShareGPT), rated (LABEL<TAB>TEXT or "
        "{text, score}), auto (from extension and content).",
        rich_help_panel=DATA,
    ),
]
PromptOpt = Annotated[
    bool,
    typer.Option(
        "--has-prompt/--no-prompt",
        help="tsv: the first column is the prompt.",
        rich_help_panel=DATA,
    ),
]
ListSizeOpt = Annotated[
    int,
    typer.Option(
        min=2,
        help="rated: texts per list (distinct labels, ordered by label).",
        rich_help_panel=DATA,
    ),
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad/--strict",
        help="Skip malformed lines and report how many, instead of stopping.",
        rich_help_panel=DATA,
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        help="Seed for list building, data order and initialisation.", rich_help_panel=RUN
    ),
]


def quiet_transformers() -> None:
    """Keep transformers' load reports and shard progress bars out of our output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def setting_problem(error: Any) -> str:
    """One pydantic error as ``name = value: what is wrong``, named as the flag is."""
    name = ".".join(map(str, error["loc"]))
    if not name:  # a rule across settings: its message names the values and the fix
        return str(error["msg"]).removeprefix("Value error, ")
    return f"--{name.replace('_', '-')} {error['input']!r}: {error['msg']}"


def with_skip_hint(exc: Exception, skip_bad: bool | None) -> str:
    """A data error, with the way past it when records were read strictly."""
    if skip_bad or str(exc).endswith("no such file"):
        return str(exc)
    return f"{exc} (pass --skip-bad to skip such records; they are counted and reported)"


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)
