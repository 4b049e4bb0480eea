"""The README's settings table against the service's settings (``app/config.py``): every
setting has its environment variable documented with its default, and the table names no
setting that does not exist. The CLI is generated from the same fields (rankrm.opts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from app.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| ((?:`RANKRM_\w+`(?: / )?)+) \| ([^|]+) \|", re.MULTILINE)
UNITS = {"KiB": 1024, "MiB": 1024**2}


def documented() -> dict[str, str]:
    """Environment variable -> the default the table gives for it."""
    table: dict[str, str] = {}
    for names, defaults in ROW.findall(README.read_text()):
        envs = re.findall(r"RANKRM_\w+", names)
        values = [d.strip() for d in defaults.split(" / ")]
        values = values if len(values) == len(envs) else [defaults.strip()] * len(envs)
        table.update(zip(envs, values, strict=True))
    return table


def parsed(text: str) -> Any:
    """A plain default as a value; prose (e.g. 'the model's') as itself."""
    text = text.strip("`")
    if text in ("true", "false"):
        return text == "true"
    if text == "none":
        return None
    match = re.fullmatch(r"(\d[\d,]*(?:\.\d+)?)(?: (KiB|MiB))?", text)
    if match:
        number = float(match.group(1).replace(",", ""))
        return number * UNITS.get(match.group(2) or "", 1)
    return text


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    table = documented()
    env = {f"RANKRM_{name.upper()}": name for name in Settings.model_fields}
    text = README.read_text()
    assert [e for e in env if e not in table and f"`{e}`" not in text] == []
    assert [e for e in table if e not in env] == []  # nothing stale
    wrong = []
    for variable, shown in table.items():
        field = Settings.model_fields[env[variable]]
        default = field.get_default(call_default_factory=True)
        value = parsed(shown)
        if default in (None, []):
            ok = value is None or isinstance(value, str)  # none, or prose saying what applies
        elif isinstance(default, bool):
            ok = value is default
        elif isinstance(default, int | float):
            ok = value == default
        else:
            ok = value == str(default)
        if not ok:
            wrong.append(f"{variable}: README says {shown!r}, the default is {default!r}")
    assert wrong == []
