"""Rule-based rewards beside the model's: per-sample results and errors, off the loop."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.rules import load_function
from tests.app.conftest import ControlledEngine, Server, running

RULES = '''
import time

def exact(prompt, response, label):
    """1 when the answer is the label, 0 otherwise; None without a label."""
    if label is None or label == "":
        return None
    if label == "boom":
        raise ZeroDivisionError("the rule broke")
    if label == "slow":
        time.sleep(2)
    if label == "text":
        return "yes"
    return 1.0 if response.strip() == label else 0.0
'''


@pytest.fixture
def ruled(engine: ControlledEngine, tmp_path: Path) -> Iterator[Server]:
    rules = tmp_path / "rules.py"
    rules.write_text(textwrap.dedent(RULES))
    with running(
        engine, reward_fn=f"{rules}:exact", reward_fn_weight=2.0, reward_fn_timeout_s=0.5
    ) as server:
        yield server


def test_rule_rewards_add_to_the_models_and_failures_stay_per_sample(ruled: Server) -> None:
    queries = ["4", "5", "4", "4", "4", "4"]
    labels = ["4", "4", "", "boom", "slow", "text"]
    body = {"query": queries, "prompts": ["2 + 2?"] * 6, "labels": labels}
    plain = httpx.post(f"{ruled.url}/get_reward", json={"query": queries}, timeout=30).json()
    answer = httpx.post(f"{ruled.url}/get_reward", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    model = plain["rewards"]
    assert data["rewards"] == pytest.approx(
        [model[0] + 2.0, model[1], model[2], model[3], model[4], model[5]], abs=1e-5
    )
    assert data["extra_logs"]["rule_reward"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert data["extra_logs"]["rule_error"] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    errors = data["errors"]
    assert errors[:3] == [None, None, None]
    assert errors[3] == "the reward function raised ZeroDivisionError: the rule broke"
    assert errors[4] == "the reward function took longer than 0.5s"
    assert errors[5] == "the reward function returned 'yes', not a finite number"
    assert httpx.get(f"{ruled.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("nothing", "expected module:function"),
        ("no_such_module_here:f", "ModuleNotFoundError"),
        ("json:no_such_function", "json has no function 'no_such_function'"),
        ("/no/such/file.py:f", "/no/such/file.py not found"),
    ],
)
def test_a_reward_function_that_does_not_load_is_a_clear_error(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        load_function(spec)
