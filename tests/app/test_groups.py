"""GRPO groups: the TRL adapter and the /groups API give the same rewards and advantages."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from rankrm.client import AsyncRewardClient, RewardClient
from tests.app.conftest import Server

PROMPTS = [f"review {i}: what did you think of film {i}?" for i in range(16)]
WORDS = ["good", "bad film", "awful", "it was not good", "love it", "great plot", "meh", "a"]


def completions_for(i: int) -> list[str]:
    """The 8 completions of prompt ``i`` (every group different)."""
    return [f"{WORDS[(i + k) % 8]} {'very ' * (k % 3)}{i}" for k in range(8)]


def trl_advantages(rewards: list[float], num_generations: int) -> list[float]:
    """TRL's GRPO advantages (``GRPOTrainer._generate_and_score_completions``, one reward
    function of weight 1, ``scale_rewards="group"``), with TRL's own ``nanstd``."""
    import torch
    from trl.trainer.utils import nanstd

    r = torch.tensor(rewards, dtype=torch.float32)
    mean_grouped_rewards = torch.nanmean(r.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_rewards = nanstd(r.view(-1, num_generations), dim=1)
    std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    advantages = r - mean_grouped_rewards
    advantages = advantages / (std_rewards + 1e-4)
    return [float(a) for a in advantages]


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_grpo_rewards_and_advantages_agree_between_trl_and_the_group_api(
    server: Server, conversational: bool
) -> None:
    """16 prompts x 8 completions: the adapter called exactly as TRL calls an async reward
    function, then TRL's advantage formula, against /groups computing them server-side."""
    pytest.importorskip("trl", reason="TRL is a dev dependency (pip install -e .[dev])")
    from trl.trainer.utils import is_async_callable

    g = 8
    if conversational:
        prompts: list[Any] = [[{"role": "user", "content": p}] for p in PROMPTS for _ in range(g)]
        completions: list[Any] = [
            [{"role": "assistant", "content": c}] for i in range(16) for c in completions_for(i)
        ]
        groups: list[Any] = [
            ([{"role": "user", "content": p}], completions_for(i)) for i, p in enumerate(PROMPTS)
        ]
    else:
        prompts = [p for p in PROMPTS for _ in range(g)]  # TRL repeats each prompt G times
        completions = [c for i in range(16) for c in completions_for(i)]
        groups = [(p, completions_for(i)) for i, p in enumerate(PROMPTS)]

    async def through_trl() -> list[float]:
        async with AsyncRewardClient(server.url) as client:
            func = client.as_grpo_reward_func()
            assert is_async_callable(func)
            output: list[float] = await func(  # TRL's call (grpo_trainer._invoke_async)
                prompts=prompts, completions=completions, completion_ids=[[1]] * len(prompts),
                trainer_state=None, log_extra=None, log_metric=None,
            )  # fmt: skip
            return output

    rewards = asyncio.run(through_trl())
    assert len(rewards) == 128
    with RewardClient(server.url) as client:
        answer = client.groups(groups)
    assert len(answer) == 16
    served_rewards = [r for group in answer for r in group["rewards"]]
    served_advantages = [a for group in answer for a in group["advantages"]]
    assert served_rewards == pytest.approx(rewards, abs=1e-6)
    assert served_advantages == pytest.approx(trl_advantages(rewards, g), abs=1e-4)


def test_groups_rank_and_state_their_epsilon(server: Server) -> None:
    body = {"groups": [{"prompt": "q", "completions": ["love it", "awful", "love it"]},
                       {"completions": ["good"]}]}  # fmt: skip
    answer = httpx.post(f"{server.url}/groups", json=body).json()
    assert answer["std_epsilon"] == 1e-4
    first, single = answer["groups"]
    rewards = first["rewards"]
    assert rewards[0] == pytest.approx(rewards[2])
    best_first = sorted(rewards, reverse=True)
    assert first["ranks"] == [1 + best_first.index(r) for r in rewards]  # ties share a rank
    assert single == {"rewards": single["rewards"], "ranks": [1], "advantages": [0.0],
                      "mean": single["rewards"][0], "std": 0.0, "truncated": [False]}  # fmt: skip
    plain = httpx.post(f"{server.url}/groups", json={**body, "scale": "none"}).json()
    assert plain["groups"][0]["advantages"] == pytest.approx(
        [r - first["mean"] for r in rewards], abs=1e-9
    )


def test_rank_top_k_and_texts(server: Server) -> None:
    candidates = ["bad film", "good", "love it", "awful"]
    body = {"candidates": candidates, "top_k": 2, "return_texts": True}
    ranking = httpx.post(f"{server.url}/rank", json=body).json()["ranking"]
    assert len(ranking) == 2
    assert [r["text"] for r in ranking] == [candidates[r["index"]] for r in ranking]
    full = httpx.post(f"{server.url}/rank", json={"candidates": candidates}).json()["ranking"]
    assert [r["index"] for r in full[:2]] == [r["index"] for r in ranking]
    assert all(r["text"] is None for r in full)


@pytest.mark.parametrize("top_k", [True, "2", 2.5, 0])
def test_rank_top_k_must_be_a_whole_number(server: Server, top_k: object) -> None:
    """Found by `make fuzz`: true was read as 1 and answered 200."""
    answer = httpx.post(f"{server.url}/rank", json={"candidates": ["a", "b"], "top_k": top_k})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("top_k: ")


def test_the_endpoint_is_counted_under_its_own_name(server: Server) -> None:
    """Request metrics take their endpoint names from the routers: no list to keep."""
    httpx.post(f"{server.url}/groups", json={"groups": [{"completions": ["good"]}]})
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'rankrm_requests_total{endpoint="/groups",status="200"}' in metrics
