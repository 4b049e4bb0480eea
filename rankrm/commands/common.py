"""What every command shares: one way to fail (``error: ...``, exit status 2) and the
messages for settings and data errors. Imports nothing but typer."""

from __future__ import annotations

from typing import Any

import typer


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
