"""The ``rankrm`` command line. Each command lives in ``rankrm.commands`` (the annotation
app's in ``rankrm.annotate.cli``); training and serving code is imported inside the
commands, so ``rankrm --help`` and the serving side never import torch.

A command whose part of rankrm is not installed (the service image has no ``training``;
a training-only install has no web stack) is still listed, and says what to install.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any

import typer

from rankrm.commands.common import fail

app = typer.Typer(
    name="rankrm",
    help="Reward models from human ranking lists: train, evaluate, export, serve, annotate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command -> (module, attribute, the extra that installs what it needs)
COMMANDS = {
    "train": ("rankrm.commands.train", "train", "train"),
    "evaluate": ("rankrm.commands.train", "evaluate", "train"),
    "export": ("rankrm.commands.export", "export", "train"),
    "score": ("rankrm.commands.score", "score", "serve"),
    "serve": ("rankrm.commands.serve", "serve", "serve"),
}


def _unavailable(name: str, extra: str, missing: str) -> Callable[..., None]:
    def command(ctx: typer.Context) -> None:
        fail(
            f"rankrm {name} is not available here: {missing} is not installed "
            f"(pip install 'rankrm[{extra}]')"
        )

    command.__doc__ = f"(not installed here: needs rankrm[{extra}])"
    return command


def _load(module: str, attribute: str) -> Any:
    return getattr(import_module(module), attribute)


ANY_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}

for _name, (_module, _attribute, _extra) in COMMANDS.items():
    try:
        app.command(_name)(_load(_module, _attribute))  # by name: generated ones have none
    except ImportError as _exc:
        _missing = _unavailable(_name, _extra, _exc.name or str(_exc))
        app.command(_name, context_settings=ANY_ARGS)(_missing)

try:
    app.add_typer(_load("rankrm.annotate.cli", "app"), name="annotate")
except ImportError as _exc:
    _missing = _unavailable("annotate", "annotate", _exc.name or str(_exc))
    app.command("annotate", context_settings=ANY_ARGS)(_missing)


def main() -> None:
    """Entry point of the ``rankrm`` program."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()
