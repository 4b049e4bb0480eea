"""The ``rankrm`` command line. Each command lives in ``rankrm.commands``; training and
serving code is imported inside the commands, so ``rankrm --help`` and the serving side
never import torch.
"""

from __future__ import annotations

import logging
import sys

import typer

from rankrm.annotate.cli import app as annotate
from rankrm.commands import export, score, serve, train

app = typer.Typer(
    name="rankrm",
    help="Reward models from human ranking lists: train, evaluate, export, serve, annotate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train.train)
app.command()(train.evaluate)
app.command()(export.export)
app.command()(score.score)
app.command()(serve.serve)
app.add_typer(annotate, name="annotate")


def main() -> None:
    """Entry point of the ``rankrm`` program."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()
