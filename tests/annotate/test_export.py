"""Rankings out as JSONL, read back by training's own reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rankrm.annotate.export import export
from rankrm.annotate.store import Store
from rankrm.annotate.tasks import TaskSpec
from tests.annotate.conftest import open_store
from training.data import load_lists

CHAT = [{"role": "user", "content": "Name a colour."}]


def annotated(db: str) -> Store:
    """Three annotators on two tasks: two agree, one reverses; one flag; one all-tied."""
    store = open_store(db, overlap=3)
    store.load([TaskSpec("a", CHAT, ("red", "blue", "zzz")), TaskSpec("b", "p", ("x", "y"))], "f")
    answers: dict[str, dict[str, Any]] = {
        "ann": {"a": [[0], [1], [2]], "b": [[0, 1]]},
        "bob": {"a": [[0], [1], [2]], "b": "flag"},
        "cy": {"a": [[2], [1], [0]], "b": [[1], [0]]},
    }
    for name, by_task in answers.items():
        me = store.annotator(name)
        while (shown := store.next(me)) is not None:
            answer = by_task[shown.task_id]
            if answer == "flag":
                store.cannot_rank(me, shown.assignment, "no idea")
            else:
                store.submit(me, shown.assignment, answer)
    return store


def test_one_list_per_annotator_keeps_who_and_trains(tmp_path: Path, sqlite_url: str) -> None:
    out = tmp_path / "out" / "rankings.jsonl"
    report = export(annotated(sqlite_url), out, "none")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert (report.records, report.tasks, report.all_tied) == (4, 2, 1)
    assert [(r["id"], r["annotator"], r["ranks"]) for r in records] == [
        ("a", "ann", [1, 2, 3]),
        ("a", "bob", [1, 2, 3]),
        ("a", "cy", [3, 2, 1]),
        ("b", "cy", [2, 1]),
    ]
    assert records[0]["prompt"] == CHAT
    lists = load_lists(out).lists
    assert len(lists) == 4
    assert lists[0].ranks == (1, 2, 3) and lists[0].prompt == "user: Name a colour."
    assert not list(tmp_path.glob("out/.rankings*"))  # no temporary file left behind


@pytest.mark.parametrize("method", ["ranked-pairs", "borda"])
def test_one_consensus_list_per_task(tmp_path: Path, sqlite_url: str, method: str) -> None:
    out = tmp_path / "consensus.jsonl"
    report = export(annotated(sqlite_url), out, method)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.records == 2
    assert records[0]["ranks"] == [1, 2, 3] and records[0]["annotators"] == ["ann", "bob", "cy"]
    assert records[1]["ranks"] == [2, 1] and records[1]["annotators"] == ["ann", "cy"]
    assert [x.ranks for x in load_lists(out).lists] == [(1, 2, 3), (2, 1)]
    assert export(annotated(str(tmp_path / "again.db")), out, method, min_rankings=3).records == 1
