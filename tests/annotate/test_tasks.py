from __future__ import annotations

from pathlib import Path

import pytest

from rankrm.annotate.tasks import TaskFileError, read_tasks
from tests.annotate.conftest import write_tasks


def test_reads_text_and_chat_prompts_and_names_tasks_by_content(tmp_path: Path) -> None:
    path = write_tasks(
        tmp_path / "t.jsonl",
        [
            {"id": "a", "prompt": "p", "responses": ["x", "y", "z"], "meta": {"src": 1}},
            {"prompt": [{"from": "human", "value": "hi"}], "responses": ["x", "y"]},
            {"id": 7, "prompt": "q", "responses": ["x", "y"]},
        ],
    )
    a, b, c = read_tasks(path)
    assert (a.id, a.responses, a.meta) == ("a", ("x", "y", "z"), {"src": 1})
    assert b.prompt == [{"role": "user", "content": "hi"}]
    assert b.id.startswith("t-") and b.id == read_tasks(path)[1].id  # same content, same id
    assert c.id == "7"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "p", "responses": ["x"]}', "'responses' holds 1; a task needs 2"),
        ('{"prompt": "p"}', "missing field 'responses'"),
        ('{"prompt": "p", "responses": ["x", 3]}', "responses[1] must be a string"),
        ('{"prompt": "p", "responses": ["x", "y"], "ranks": [1, 2]}', "unknown field(s) ['ranks']"),
        ('{"prompt": "p", "responses": ["x", "\\ud800"]}', "responses[1]: not valid Unicode"),
        ('{"prompt": [{"role": "robot", "content": "x"}], "responses": ["x", "y"]}', "prompt[0]"),
        ('{"prompt": "  ", "responses": ["x", "y"]}', "'prompt' is blank"),
        ('{"prompt": "p", "responses": ["x", "y"]', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_bad_line_stops_with_file_line_and_problem(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "ok", "responses": ["a", "b"]}\n\n' + line + "\n")
    with pytest.raises(TaskFileError) as caught:
        read_tasks(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert problem in str(caught.value)


def test_bad_bytes_and_repeated_ids_are_located(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "\xff"}\n')
    with pytest.raises(TaskFileError, match=r":2: not valid UTF-8: byte 0xff"):
        read_tasks(path)
    write_tasks(path, [{"prompt": "p", "responses": ["a", "b"]}] * 2)
    with pytest.raises(TaskFileError, match=r":2: task id 't-\w+' is already used by line 1"):
        read_tasks(path)
    path.write_text("\n")
    with pytest.raises(TaskFileError, match="no tasks"):
        read_tasks(path)
