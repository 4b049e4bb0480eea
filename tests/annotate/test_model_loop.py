"""Model in the loop against a real rankrm service on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankrm.annotate.model_loop import priority, score_tasks, smallest_gap
from rankrm.annotate.tasks import TaskSpec
from rankrm.client import RewardClient
from rankrm.runtime import OnnxRewardModel
from tests.annotate.conftest import open_store
from tests.app.conftest import ControlledEngine, running


def test_priority_is_the_smallest_gap_shrunk_by_disagreement() -> None:
    rewards = [0.0, 1.0, 3.0]
    assert smallest_gap(rewards) == 1.0
    assert priority(rewards) == 1.0
    assert priority(rewards, [[3, 2, 1]]) == 1.0  # people agree with the model entirely
    assert priority(rewards, [[1, 2, 3]]) == 0.0  # they reverse it: first in line


def test_tasks_the_model_is_least_sure_of_come_first(model_dir: Path, sqlite_url: str) -> None:
    tasks = [
        TaskSpec("far", "Review the film.", ("An outstanding, moving film.", "Dreadful, boring.")),
        TaskSpec("near", "Review the film.", ("A good film.", "A good film!")),
        TaskSpec("mid", "Review the film.", ("Great acting.", "Weak plot.", "It was fine.")),
    ]
    store = open_store(sqlite_url, overlap=1)
    store.load(tasks, "f")
    with running(ControlledEngine(OnnxRewardModel.load(model_dir))) as server:
        assert score_tasks(store, server.url) == 3
        assert score_tasks(store, server.url) == 0  # scored once
        with RewardClient(server.url) as client:
            gaps = {
                t.id: smallest_gap(
                    client.score(list(t.responses), [str(t.prompt)] * len(t.responses))
                )
                for t in tasks
            }
    ann = store.annotator("ann")
    order = []
    while (shown := store.next(ann)) is not None:
        order.append(shown.task_id)
        store.submit(ann, shown.assignment, [[r["index"]] for r in shown.responses])
    assert order == sorted(gaps, key=lambda t: gaps[t])
    stored = {t: r for t, _, r in store.unscored_tasks()}
    assert stored == {}
    with store.sessions() as session:
        from rankrm.annotate.schema import Task

        for task in session.query(Task):
            assert task.model_rewards is not None
            assert smallest_gap(task.model_rewards) == pytest.approx(gaps[task.id], abs=1e-5)
