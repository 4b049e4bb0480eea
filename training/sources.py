"""Records out of files, with their location: JSON Lines or a JSON array, tab-separated
lines; bytes that are not UTF-8 and lone surrogates become :class:`BadRecord`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankrm.encoding import find_unicode_problem
from training.lists import DataError


class BadRecord(ValueError):
    """A record that could not be read (invalid JSON, invalid UTF-8 or Unicode)."""


def decoded(raw: bytes) -> str | BadRecord:
    """A line's bytes as text, or why they are not UTF-8 (with the column)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} ({exc.reason})"
        )


def parsed(text: str) -> Any:
    """One JSON document, or why it cannot be used: invalid JSON, or a lone surrogate
    escape in any string (see ``rankrm.encoding.unicode_problem``)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRecord(f"invalid JSON: {exc.msg} (column {exc.colno})")
    problem = find_unicode_problem(record)
    return BadRecord(problem) if problem else record


def json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, record or :class:`BadRecord`): ``N`` (the line) for JSON Lines,
    ``item N`` for a JSON array."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"["):
        text = decoded(data)
        if isinstance(text, BadRecord):
            raise DataError(path, line_of_bad_byte(data), str(text))
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"{exc.lineno}", f"invalid JSON: {exc.msg}") from exc
        for index, item in enumerate(items):
            problem = find_unicode_problem(item)
            yield f"item {index}", BadRecord(problem) if problem else item
        return
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        text = decoded(raw)
        yield f"{number}", text if isinstance(text, BadRecord) else parsed(text)


def line_of_bad_byte(data: bytes) -> str:
    """The line holding the first byte that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return str(data[: exc.start].count(b"\n") + 1)
    return "0"


def tsv_lines(path: Path) -> Iterator[tuple[str, list[str] | BadRecord]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = decoded(raw.rstrip(b"\r\n"))
            if isinstance(text, BadRecord):
                yield f"{number}", text
            elif text.strip():
                yield f"{number}", text.split("\t")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
