"""``rankrm score FILE``: the service's numbers, offline or through it; resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from rankrm.batch_score import ScoreFileError, local_scorer, remote_scorer, score_file
from rankrm.cli import app
from rankrm.runtime import OnnxRewardModel
from tests.app.conftest import ControlledEngine, running
from tests.rankrm.test_cli import runner

RECORDS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "user", "content": "review?"},
            {"role": "assistant", "content": "good"},
        ]
    },
    {"prompt": "review?", "response": "a fine film"},
    {"text": "awful"},
    {"prompt": [{"role": "user", "content": "q"}], "chosen": "love it", "rejected": "bad"},
    {"prompt": "q", "completions": ["good", "bad film", "it was not good"]},
]


def data_file(path: Path, records: list[dict[str, Any]] = RECORDS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_offline_and_through_the_service_give_the_services_numbers(
    model_dir: Path, tmp_path: Path
) -> None:
    engine = ControlledEngine(OnnxRewardModel.load(model_dir))
    source = data_file(tmp_path / "data.jsonl")
    offline = tmp_path / "offline.jsonl"
    assert score_file(source, offline, local_scorer(model_dir)) == len(RECORDS)
    with running(engine) as server:
        online = tmp_path / "online.jsonl"
        with remote_scorer(server.url) as remote:
            score_file(source, online, remote)
        items = [
            {"messages": RECORDS[0]["messages"]},
            {"prompt": "review?", "response": "a fine film"},
            {"response": "awful"},
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "love it"},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "bad"},
                ]
            },
        ]
        served = httpx.post(f"{server.url}/score", json={"items": items}).json()["rewards"]
        group = httpx.post(f"{server.url}/groups", json={"groups": [RECORDS[4]]}).json()["groups"][
            0
        ]
    for results in (read(offline), read(online)):
        assert [r["reward"] for r in results[:3]] == pytest.approx(served[:3], abs=1e-6)
        pair = results[3]
        assert [pair["reward_chosen"], pair["reward_rejected"]] == pytest.approx(
            served[3:], abs=1e-6
        )
        assert pair["chosen_better"] == (served[3] > served[4])
        assert results[4]["rewards"] == pytest.approx(group["rewards"], abs=1e-6)
        assert results[4]["advantages"] == pytest.approx(group["advantages"], abs=1e-3)
        assert results[4]["ranks"] == group["ranks"]
        assert results[1]["prompt"] == "review?"  # the record kept as it was


def test_a_stopped_run_resumes_where_it_stopped(model_dir: Path, tmp_path: Path) -> None:
    source = data_file(tmp_path / "data.jsonl")
    out = tmp_path / "out.jsonl"
    scorer = local_scorer(model_dir)
    score_file(source, out, scorer)
    complete = out.read_text()
    lines = complete.splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])  # stopped mid-line
    calls: list[int] = []

    def counted(items: Any) -> list[float]:
        calls.append(len(items))
        return scorer(items)

    assert score_file(source, out, counted) == 3
    assert calls == [1 + 2 + 3]  # only the three records not done
    assert out.read_text() == complete


def test_a_bad_line_stops_with_file_and_line(model_dir: Path, tmp_path: Path) -> None:
    source = data_file(tmp_path / "data.jsonl", [RECORDS[2], {"prompt": "q"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(ScoreFileError, match=r"data.jsonl:2: no field to score"):
        score_file(source, out, local_scorer(model_dir))
    assert not out.exists() or out.read_text() == ""  # nothing half-written


def test_the_command(model_dir: Path, tmp_path: Path) -> None:
    source = data_file(tmp_path / "data.jsonl")
    result = runner.invoke(
        app, ["score", str(source), "--model-dir", str(model_dir), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary == {"scored": 5, "out": str(tmp_path / "data.scored.jsonl"), "records": 5}
    again = runner.invoke(
        app, ["score", str(source), "--model-dir", str(model_dir), "--no-progress"]
    )
    assert json.loads(again.output)["scored"] == 0  # all done: nothing scored twice
    neither = runner.invoke(app, ["score", str(source)])
    assert neither.exit_code == 2 and "exactly one of --url" in neither.output
