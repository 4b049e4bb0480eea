"""Commands whose options are a configuration class's fields (see ``rankrm.opts``): the
name, type and default come from the field, the help and panel from its ``Opt``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, get_args, get_type_hints

import typer

from rankrm.opts import Opt


def typer_info(opt: Opt) -> Any:
    """The typer Argument or Option an ``Opt`` describes."""
    if opt.argument:
        return typer.Argument(help=opt.help, show_default=False)
    decls = (opt.flag,) if opt.flag else ()
    return typer.Option(*decls, help=opt.help, rich_help_panel=opt.panel, min=opt.min, max=opt.max)


def cli_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any, Opt]]:
    """(field, type, Opt) of each field of ``cls`` a user sets on the command line."""
    hints = get_type_hints(cls, include_extras=True)
    found = []
    for f in dataclasses.fields(cls):
        base, *extras = get_args(hints[f.name]) or (hints[f.name],)
        opt = next((e for e in extras if isinstance(e, Opt)), None)
        if opt is not None and opt.cli:
            found.append((f, base, opt))
    return found


def command_from(
    cls: type,
    run: Callable[[dict[str, Any]], None],
    doc: str,
    extra: Sequence[inspect.Parameter] = (),
) -> Any:
    """A typer command taking ``cls``'s fields (and ``extra`` parameters, for options that
    are not a field as they are) as options and calling ``run(values)``."""

    def command(**given: Any) -> None:
        run(given)

    parameters = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=Annotated[base, typer_info(opt)],
        )
        for f, base, opt in cli_fields(cls)
    ]
    command.__signature__ = inspect.Signature([*parameters, *extra])  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command
