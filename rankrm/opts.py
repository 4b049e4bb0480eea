"""How a configuration field appears on the command line, declared once on the field.

A dataclass field reads ``lr: Annotated[float, Opt("Peak AdamW learning rate.", OPTIM)] =
5e-5``: its name, type and default are the field's, its help and panel are here, and
``rankrm.commands.generate`` builds the command's options from the class. Nothing restates
them, and the tests check the README against the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Opt:
    """One field's command-line presentation."""

    help: str
    panel: str | None = None  # the --help section it is listed under
    flag: str | None = None  # the option's name(s) when not --field-name ("--dev", "--a/--b")
    min: float | None = None
    max: float | None = None
    argument: bool = False  # a positional argument instead of an option
    cli: bool = True  # False: set by the program, not by the user
