"""Read annotation tasks: JSON Lines of ``{"id"?, "prompt", "responses": [...], "meta"?}``.

``prompt`` is text or a list of chat messages (``role``/``content`` or ``from``/``value``),
``responses`` any K >= 2 strings. A task without an ``id`` gets one from its content, so
loading the same file twice loads nothing new. The whole file is read before anything is
stored; the first bad line stops it with ``FILE:LINE: problem``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.encoding import find_unicode_problem, is_blank, normalise_message

Prompt = str | list[dict[str, str]]
"""Text, or chat messages with standard role names."""

_FIELDS = frozenset({"id", "prompt", "responses", "meta"})
MAX_RESPONSES = 64
MAX_ID_LENGTH = 200


class TaskFileError(ValueError):
    """A task file that cannot be loaded, located by file and line."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}")


@dataclass(frozen=True)
class TaskSpec:
    """One prompt and its K candidate responses, as loaded from a task file."""

    id: str
    prompt: Prompt
    responses: tuple[str, ...]
    meta: Any = None

    def content_key(self) -> str:
        """A digest of what annotators see: equal for the same prompt and responses."""
        return content_digest(self.prompt, self.responses)


def content_digest(prompt: Prompt, responses: tuple[str, ...] | list[str]) -> str:
    canonical = json.dumps([prompt, list(responses)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _prompt(value: Any) -> Prompt:
    if isinstance(value, str):
        if is_blank(value):
            raise ValueError("field 'prompt' is blank")
        return value
    if isinstance(value, list) and value:
        messages: list[dict[str, str]] = []
        for index, message in enumerate(value):
            if not isinstance(message, Mapping):
                raise ValueError(f"prompt[{index}] must be a chat message object")
            try:
                messages.append(normalise_message(message))
            except ValueError as exc:
                raise ValueError(f"prompt[{index}]: {exc}") from None
        return messages
    raise ValueError("field 'prompt' must be text or a non-empty list of chat messages")


def _responses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("field 'responses' must be a list of strings")
    if not 2 <= len(value) <= MAX_RESPONSES:
        raise ValueError(f"field 'responses' holds {len(value)}; a task needs 2 to {MAX_RESPONSES}")
    for index, response in enumerate(value):
        if not isinstance(response, str):
            raise ValueError(f"responses[{index}] must be a string, got {type(response).__name__}")
    return tuple(value)


def parse_task(record: Any) -> TaskSpec:
    """One task from a parsed JSON record; ValueError names the field that is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a task has {sorted(_FIELDS)}")
    for required in ("prompt", "responses"):
        if required not in record:
            raise ValueError(f"missing field '{required}'")
    problem = find_unicode_problem(record)
    if problem:
        raise ValueError(problem)
    prompt = _prompt(record["prompt"])
    responses = _responses(record["responses"])
    task_id = record.get("id")
    if task_id is None:
        task_id = "t-" + content_digest(prompt, responses)[:16]
    elif isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > MAX_ID_LENGTH:
        raise ValueError(f"field 'id' must be a non-empty string of at most {MAX_ID_LENGTH}")
    return TaskSpec(task_id, prompt, responses, record.get("meta"))


def read_tasks(path: Path) -> list[TaskSpec]:
    """Every task in a JSON Lines file; stops at the first bad line (TaskFileError)."""
    tasks: list[TaskSpec] = []
    first_line: dict[str, int] = {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TaskFileError(path, 0, f"cannot read: {exc.strerror or exc}") from None
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskFileError(
                path,
                number,
                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",
            ) from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                path, number, f"invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        try:
            task = parse_task(record)
        except ValueError as exc:
            raise TaskFileError(path, number, str(exc)) from None
        if task.id in first_line:
            raise TaskFileError(
                path,
                number,
                f"task id {task.id!r} is already used by line {first_line[task.id]} "
                "(a task without an id takes one from its prompt and responses)",
            )
        first_line[task.id] = number
        tasks.append(task)
    if not tasks:
        raise TaskFileError(path, 0, "no tasks in the file")
    return tasks
