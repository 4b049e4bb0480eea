"""OpenRLHF's own reward client against a real ``rankrm serve``.

The client code below is copied from OpenRLHF (Apache License 2.0,
https://github.com/OpenRLHF/OpenRLHF): ``_fetch_rewards_via_http`` from
``openrlhf/utils/agent.py`` at commit 3c3be623 (the single-sample agent path of current
releases) and ``request_api_wrapper`` from ``openrlhf/utils/remote_rm_utils.py`` before
commit a458821e (older releases, which post a whole rollout batch at once). Only the
logger was replaced, the methods made free functions and the code formatted as this project
formats code; the request logic is unchanged.
"""

# ruff: noqa: E501, SIM117
# mypy: disable-error-code="no-untyped-def, no-untyped-call"

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.test_main import free_port, wait_ready

logger = logging.getLogger("openrlhf-client")

pytestmark = pytest.mark.slow


# ------------------------------------------------------------- copied from OpenRLHF


async def _fetch_rewards_via_http(reward_endpoints, queries_list, prompts_list, labels_list):
    """HTTP fallback: shard requests across servers."""
    import aiohttp

    num_servers = len(reward_endpoints)
    batch_size = (len(queries_list) + num_servers - 1) // num_servers
    timeout = aiohttp.ClientTimeout(total=180)

    tasks = []
    for i, rm in enumerate(reward_endpoints):
        start_idx = i * batch_size
        end_idx = min((i + 1) * batch_size, len(queries_list))
        payload = {
            "query": queries_list[start_idx:end_idx],
            "prompts": prompts_list[start_idx:end_idx],
            "labels": labels_list[start_idx:end_idx],
        }

        async def _post_request(url, data, try_max_times=5):
            for _ in range(try_max_times):
                try:
                    async with aiohttp.ClientSession(timeout=timeout) as session:
                        async with session.post(url, json=data) as response:
                            response.raise_for_status()
                            return await response.json()
                except aiohttp.ClientError as e:
                    logger.info(f"Request error, please check: {e}")
                except Exception as e:  # pragma: no cover - defensive
                    logger.info(f"Unexpected error, please check: {e}")
                await asyncio.sleep(1)

            raise RuntimeError(
                f"Request error for {try_max_times} times, returning None. Please check the API server."
            )

        tasks.append(asyncio.create_task(_post_request(rm, payload)))
    return await asyncio.gather(*tasks)


def request_api_wrapper(url, data, try_max_times=5):
    """Synchronous request API wrapper"""
    import requests
    import torch

    headers = {
        "Content-Type": "application/json",
    }
    for _ in range(try_max_times):
        try:
            response = requests.post(url=url, json=data, headers=headers, timeout=600)
            response.raise_for_status()  # Raise an HTTPError for bad responses
            response = response.json()
            # Transform r so that the list are replaced with tensors
            response["rewards"] = torch.tensor(response["rewards"])
            response["scores"] = torch.tensor(response["scores"])
            for key in response["extra_logs"]:
                response["extra_logs"][key] = torch.tensor(response["extra_logs"][key])
            return response
        except requests.RequestException as e:
            logger.info(f"Request error, please check: {e}")
        except Exception as e:
            logger.info(f"Unexpected error, please check: {e}")
        time.sleep(1)

    raise Exception(
        f"Request error for {try_max_times} times, returning None. Please check the API server."
    )


# ------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[str]:
    """``rankrm serve`` in its own process, as an OpenRLHF cluster would reach it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(model_dir), "--port",
         str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # waits, and closes its pipe


def query(i: int) -> str:
    """A policy's prompt + response decoded with its special tokens (ChatML), varied."""
    words = ["good", "bad", "a fine film", "not worth it", "loved every minute"][i % 5]
    return (
        f"<|im_start|>user\nReview {i}?<|im_end|>\n<|im_start|>assistant\n{words} {i}"
        "<|im_end|>\n<|endoftext|>"
    )


def test_openrlhfs_agent_client_scores_256_concurrent_samples(served: str) -> None:
    """The current client: one sample per request, 256 at once (as 256 rollouts finishing
    together), each its own aiohttp session; every reward returned, scores in (0, 1)."""
    url = f"{served}/get_reward"

    async def one(i: int) -> dict[str, Any]:
        (info,) = await _fetch_rewards_via_http([url], [query(i)], [f"Review {i}?"], [""])
        return dict(info)

    async def everyone() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(i) for i in range(256)))

    answers = asyncio.run(everyone())
    assert len(answers) == 256
    for info in answers:  # what SingleTurnAgentExecutor reads
        assert len(info["rewards"]) == len(info["scores"]) == 1
        assert 0 < info["scores"][0] < 1
        logs = info["extra_logs"]
        assert logs["policy_format"] == [1.0]  # ChatML recognised
        assert {"raw_reward", "tokens", "truncated"} <= set(logs)
    # the same text scores the same whichever batch it landed in
    again = asyncio.run(one(0))
    assert again["rewards"][0] == pytest.approx(answers[0]["rewards"][0], abs=1e-5)


def test_a_replica_given_no_samples_answers_empty_lists(served: str) -> None:
    """Two reward URLs and one sample: OpenRLHF posts empty lists to the second."""
    url = f"{served}/get_reward"
    first, second = asyncio.run(_fetch_rewards_via_http([url, url], [query(1)], ["p"], [""]))
    assert len(first["rewards"]) == 1
    assert second == {"rewards": [], "scores": [], "extra_logs": {}}


def test_openrlhfs_older_client_posts_a_whole_rollout_batch(served: str) -> None:
    """Older releases post 1,024 samples in one request (the default rollout batch): all
    scored (max_items at a time), read back into tensors as that client does."""
    queries = [query(i) for i in range(1024)]
    prompts = [f"Review {i}?" for i in range(1024)]
    labels = [""] * 1024
    data = {"query": queries, "prompts": prompts, "labels": labels}
    response = request_api_wrapper(f"{served}/get_reward", data)
    assert response["rewards"].shape == response["scores"].shape == (1024,)
    assert float(response["scores"].min()) > 0 and float(response["scores"].max()) < 1
    assert response["extra_logs"]["raw_reward"].shape == (1024,)
    single = asyncio.run(
        _fetch_rewards_via_http([f"{served}/get_reward"], queries[7:8], ["x"], [""])
    )
    assert float(response["rewards"][7]) == pytest.approx(single[0]["rewards"][0], abs=1e-5)
