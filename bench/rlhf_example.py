"""The RLHF trainers' side, worked through with figures: OpenRLHF's own reward clients and a
GRPO step through TRL's reward-function interface, against ``rankrm serve`` on a model.

    PYTHONPATH=. .venv/bin/python bench/rlhf_example.py --model models/default

1. OpenRLHF's agent client (one sample per request, each its own aiohttp session): 256
   rollouts finishing at once, then 1,024.
2. OpenRLHF's older client: a whole rollout batch of 1,024 samples in one request.
3. GRPO: 16 prompts x 8 completions through ``AsyncRewardClient.as_grpo_reward_func()``
   (called as TRL calls it) and through ``/groups``; the largest difference in rewards and
   advantages between the two.

The clients are the code in ``tests/app/test_openrlhf.py`` (copied from OpenRLHF).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from rankrm.client import AsyncRewardClient, RewardClient
from tests.app.test_groups import PROMPTS, completions_for, trl_advantages
from tests.app.test_main import free_port, wait_ready
from tests.app.test_openrlhf import _fetch_rewards_via_http, query, request_api_wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(args.model)]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_ready(base, proc)
        url = f"{base}/get_reward"

        async def agent(n: int) -> list[dict[str, object]]:
            async def one(i: int) -> dict[str, object]:
                (info,) = await _fetch_rewards_via_http([url], [query(i)], [f"Review {i}?"], [""])
                return dict(info)

            return await asyncio.gather(*(one(i) for i in range(n)))

        asyncio.run(agent(32))  # warm-up
        for n in (256, 1024):
            started = time.perf_counter()
            answers = asyncio.run(agent(n))
            seconds = time.perf_counter() - started
            scores = [float(a["scores"][0]) for a in answers]  # type: ignore[index]
            print(
                f"OpenRLHF agent client, {n} concurrent one-sample requests: {seconds:.2f} s "
                f"({n / seconds:.0f} samples/s); scores in [{min(scores):.3f}, {max(scores):.3f}]"
            )
        data = {"query": [query(i) for i in range(1024)], "prompts": [""] * 1024,
                "labels": [""] * 1024}  # fmt: skip
        started = time.perf_counter()
        response = request_api_wrapper(url, data)
        seconds = time.perf_counter() - started
        print(
            f"OpenRLHF older client, one request of 1024 samples: {seconds:.2f} s "
            f"({1024 / seconds:.0f} samples/s); rewards shape {tuple(response['rewards'].shape)}"
        )

        prompts = [p for p in PROMPTS for _ in range(8)]
        completions = [c for i in range(16) for c in completions_for(i)]

        async def grpo() -> list[float]:
            async with AsyncRewardClient(base) as client:
                func = client.as_grpo_reward_func()
                rewards: list[float] = await func(prompts=prompts, completions=completions)
                return rewards

        started = time.perf_counter()
        rewards = asyncio.run(grpo())
        trl_seconds = time.perf_counter() - started
        advantages = trl_advantages(rewards, 8)
        started = time.perf_counter()
        with RewardClient(base) as client:
            groups = client.groups([(p, completions_for(i)) for i, p in enumerate(PROMPTS)])
        group_seconds = time.perf_counter() - started
        served = [r for g in groups for r in g["rewards"]]
        served_adv = [a for g in groups for a in g["advantages"]]
        worst_adv = max(abs(a - b) for a, b in zip(advantages, served_adv, strict=True))
        print(
            f"GRPO 16 x 8: TRL adapter {trl_seconds * 1000:.0f} ms, /groups "
            f"{group_seconds * 1000:.0f} ms; max |reward diff| "
            f"{max(abs(a - b) for a, b in zip(rewards, served, strict=True)):.1e}, max "
            f"|advantage diff| {worst_adv:.1e}"
        )
        print(f"group 0: rewards {[round(r, 2) for r in groups[0]['rewards']]}")
        print(f"         ranks {groups[0]['ranks']}")
        print(f"         advantages {[round(a, 3) for a in groups[0]['advantages']]}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


if __name__ == "__main__":
    main()
