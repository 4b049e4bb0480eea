"""Every endpoint against a real server on loopback, and batching invariance."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from rankrm.runtime import OnnxRewardModel
from tests.app.conftest import ControlledEngine, Server, running

TEXTS = [
    "good", "the movie was very good and the plot was great and the acting was nice",
    "bad film", "awful", "it was not good", "love it", "a", "the worst film " * 8,
]  # fmt: skip


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> OnnxRewardModel:
    return OnnxRewardModel.load(model_dir)


def alone(reference: OnnxRewardModel, text: str, prompt: str | None = None) -> float:
    """The normalised reward of one text scored on its own (batch of one)."""
    raw = reference.run_encodings(reference.encode([prompt], [text]))
    return float(reference.normalize(raw)[0])


def test_score_texts_in_order(server: Server, reference: OnnxRewardModel) -> None:
    answer = httpx.post(f"{server.url}/score", json={"texts": TEXTS}).json()
    assert answer["normalized"] is True
    assert answer["model"] == "model"
    assert answer["rewards"] == pytest.approx([alone(reference, t) for t in TEXTS], abs=1e-5)
    assert answer["usage"]["texts"] == len(TEXTS)
    assert set(answer["timings"]) == {"tokenize_ms", "queue_ms", "inference_ms", "total_ms"}


def test_score_items_with_prompts_and_chat_messages(
    server: Server, reference: OnnxRewardModel
) -> None:
    items = [
        {"prompt": "the question", "response": "good answer"},
        {"prompt": [{"role": "user", "content": "the question"}], "response": "good answer"},
        {"response": "no prompt"},
    ]
    answer = httpx.post(f"{server.url}/score", json={"items": items}).json()
    assert answer["rewards"] == pytest.approx([
        alone(reference, "good answer", "the question"),
        alone(reference, "good answer", "user: the question"),
        alone(reference, "no prompt"),
    ], abs=1e-5)  # fmt: skip


def test_raw_rewards_skip_normalisation(server: Server, reference: OnnxRewardModel) -> None:
    answer = httpx.post(f"{server.url}/score", json={"texts": ["good"], "raw": True}).json()
    raw = float(reference.run_encodings(reference.encode([None], ["good"]))[0])
    assert answer["normalized"] is False
    assert answer["rewards"][0] == pytest.approx(raw, abs=1e-5)


def test_a_texts_reward_does_not_depend_on_its_batch(
    server: Server, reference: OnnxRewardModel
) -> None:
    # Many concurrent one-text requests of very different lengths share batches.
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(48)]

    def one(text: str) -> float:
        return float(httpx.post(f"{server.url}/score", json={"texts": [text]}).json()["rewards"][0])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, texts))
    assert got == pytest.approx([alone(reference, t) for t in texts], abs=1e-5)
    assert max(len(b) for b in server.engine.batches) > 1, "requests should have been batched"


def test_two_model_workers_run_batches_side_by_side_with_the_same_rewards(
    engine: ControlledEngine, reference: OnnxRewardModel
) -> None:
    """model_workers=2: while one batch is in the model the next forms and runs on the
    other thread (the one session shared); every reward is still the text's own."""
    texts = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(24)]
    engine.delay_s = 0.05  # long enough for batches to overlap

    def one(text: str) -> float:
        answer = httpx.post(f"{s.url}/score", json={"texts": [text]}, timeout=30)
        return float(answer.json()["rewards"][0])

    with running(engine, model_workers=2, max_batch_size=4) as s:
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(one, texts))
        health = httpx.get(f"{s.url}/ready").status_code
    assert engine.most_running == 2
    assert got == pytest.approx([alone(reference, t) for t in texts], abs=1e-5)
    assert health == 200


def test_compare_gives_both_rewards_and_a_probability(server: Server) -> None:
    pairs = [{"prompt": "q", "a": "good", "b": "bad"}, {"a": "awful", "b": "love it"}]
    results = httpx.post(f"{server.url}/compare", json={"pairs": pairs}).json()["results"]
    raw = httpx.post(f"{server.url}/score", json={"raw": True, "items": [
        {"prompt": "q", "response": "good"}, {"prompt": "q", "response": "bad"},
        {"response": "awful"}, {"response": "love it"}]}).json()["rewards"]  # fmt: skip
    for i, result in enumerate(results):
        diff = raw[2 * i] - raw[2 * i + 1]
        assert result["p_a_better"] == pytest.approx(1 / (1 + math.exp(-diff)), abs=1e-6)
        assert result["reward_a"] - result["reward_b"] == pytest.approx(diff, abs=1e-5)


def test_rank_orders_candidates_best_first(server: Server) -> None:
    candidates = ["bad film", "good", "it was not good", "love it"]
    answer = httpx.post(f"{server.url}/rank", json={"prompt": "review", "candidates": candidates})
    ranking = answer.json()["ranking"]
    rewards = [r["reward"] for r in ranking]
    assert rewards == sorted(rewards, reverse=True)
    assert sorted(r["index"] for r in ranking) == [0, 1, 2, 3]
    scored = httpx.post(f"{server.url}/score", json={"items": [
        {"prompt": "review", "response": c} for c in candidates]}).json()["rewards"]  # fmt: skip
    assert [scored[r["index"]] for r in ranking] == pytest.approx(rewards)


def test_get_reward_speaks_openrlhf(server: Server, reference: OnnxRewardModel) -> None:
    empty = httpx.post(f"{server.url}/get_reward", json={"query": []})
    assert empty.status_code == 200
    assert empty.json() == {"rewards": [], "scores": [], "extra_logs": {}}
    request = {
        "query": ["the question good answer", "unrelated text"],
        "prompts": ["the question", "something else"],
        "labels": ["", ""],
    }
    answer = httpx.post(f"{server.url}/get_reward", json=request).json()
    expected = [
        alone(reference, " good answer", "the question"),
        alone(reference, "unrelated text"),
    ]
    assert answer["rewards"] == pytest.approx(expected, abs=1e-5)
    # scores: sigmoid(reward / the temperature recorded at export), in (0, 1) for OpenRLHF
    temperature = server.engine.manifest.score_temperature
    assert temperature is not None and temperature > 0
    assert answer["scores"] == pytest.approx(
        [1 / (1 + math.exp(-r / temperature)) for r in answer["rewards"]], abs=1e-9
    )
    assert all(0 < s < 1 for s in answer["scores"])
    only_query = httpx.post(f"{server.url}/get_reward", json={"query": ["good"]}).json()
    assert only_query["rewards"] == pytest.approx([alone(reference, "good")], abs=1e-5)


def test_form_encoded_json_is_read_as_json(server: Server) -> None:
    answer = httpx.post(
        f"{server.url}/score",
        content=b'{"texts": ["good"]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200


def test_operational_endpoints(server: Server, model_dir: Path) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json()["status"] == "ready"
    info = httpx.get(f"{server.url}/info").json()
    assert info["model"]["name"] == "model"
    written = json.loads((model_dir / "manifest.json").read_text())["normalization"]
    assert info["model"]["normalization"]["offset"] == pytest.approx(written["offset"])
    assert written["offset"] != 0.0  # measured on the reference set, not the default
    assert info["limits"]["max_items"] == 512
    assert info["limits"]["split_overhead_tokens"] >= 0  # measured at start-up
    httpx.post(f"{server.url}/score", json={"texts": ["good"]})
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("rankrm_requests_total", "rankrm_queue_size", "rankrm_batch_size_bucket",
                 "rankrm_batch_tokens_bucket", "rankrm_queue_seconds_bucket",
                 "rankrm_batch_model_calls_bucket",
                 "rankrm_inference_seconds_bucket"):  # fmt: skip
        assert name in metrics
    assert 'rankrm_requests_total{endpoint="/score",status="200"}' in metrics
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/score" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_rewards_match_the_engine_directly(server: Server) -> None:
    answer = httpx.post(f"{server.url}/score", json={"texts": TEXTS, "raw": True}).json()
    direct = server.engine.model.raw_scores([None] * len(TEXTS), TEXTS)
    np.testing.assert_allclose(answer["rewards"], direct, atol=1e-5)


def test_get_reward_refuses_a_sample_it_cannot_score_naming_it(server: Server) -> None:
    answer = httpx.post(f"{server.url}/get_reward", json={"query": ["good", " \u200b "]})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("query[1]: empty text")
