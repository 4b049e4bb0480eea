"""Conformance: a reward model from elsewhere, exported and served over HTTP, gives the reward
transformers gives for the same conversation (its own tokenizer's chat template, its own
model), within 1e-4, for each decoder family and each input shape the service takes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rankrm.runtime import OnnxRewardModel
from tests.app.conformance import (
    FAMILIES,
    MAX_LENGTH,
    MULTI,
    SHORT,
    SYSTEM,
    Reference,
    agrees,
    reward_model_folder,
    served_rewards,
)
from tests.app.conftest import ControlledEngine, Server, running
from tests.conftest import texts_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=FAMILIES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Server, Reference]]:
    from training.export import ExportConfig, export_model

    family: str = request.param
    tmp = tmp_path_factory.mktemp(family)
    folder = reward_model_folder(tmp / "checkpoint", family)
    out = tmp / "model"
    reference = texts_file(tmp / "ref.jsonl")
    export_model(ExportConfig(folder, out, reference=reference, max_length=MAX_LENGTH))
    engine = ControlledEngine(OnnxRewardModel.load(out))
    with running(engine) as server:
        yield family, server, Reference(folder)


def test_the_manifest_carries_the_template(served: tuple[str, Server, Reference]) -> None:
    _, server, reference = served
    manifest = server.engine.manifest
    assert manifest.template == "chat"
    assert manifest.chat_template == reference.tokenizer.chat_template
    assert manifest.special_tokens["bos_token"] == "<s>"


@pytest.mark.parametrize(
    "conversation", [SHORT, MULTI, [SYSTEM, *SHORT]], ids=["single", "multi-turn", "system"]
)
def test_messages_score_as_transformers(
    served: tuple[str, Server, Reference], conversation: list[dict[str, str]]
) -> None:
    family, server, reference = served
    (reward,), usage = served_rewards(server, {"items": [{"messages": conversation}]})
    shape = {2: "messages", 3: "messages + system", 4: "messages, multi-turn"}[len(conversation)]
    assert agrees(family, shape, reward, reference.chat(conversation))
    assert usage["truncated"] == 0


def test_a_batch_of_different_lengths_scores_each_as_alone(
    served: tuple[str, Server, Reference],
) -> None:
    """One request, one padded batch: padding (right, with the model's pad id or, for a
    checkpoint without one, the id the export chose) changes no reward."""
    family, server, reference = served
    if family == "llama-left-nopad":
        assert reference.tokenizer.pad_token is None
        assert reference.tokenizer.padding_side == "left"
        assert reference.model.config.pad_token_id is None
        assert server.engine.manifest.pooling == "last-token-by-attention-mask"
    conversations = [SHORT, MULTI, [SYSTEM, *SHORT]]
    rewards, _ = served_rewards(server, {"items": [{"messages": c} for c in conversations]})
    expected = [reference.chat(c) for c in conversations]
    assert agrees(family, "messages, batch of 3 lengths", rewards, expected)


def test_prompt_and_response_score_as_that_conversation(
    served: tuple[str, Server, Reference],
) -> None:
    family, server, reference = served
    items = [
        {"prompt": "What is 2 + 2?", "response": "4."},
        {"prompt": MULTI[:-1], "response": "7"},
        {"prompt": [{"from": "human", "value": "Hi"}], "response": "Hello"},
    ]
    rewards, _ = served_rewards(server, {"items": items})
    expected = [
        reference.chat(SHORT),
        reference.chat(MULTI),
        reference.chat(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        ),
    ]
    assert agrees(family, "prompt + response", rewards, expected)
    pair = httpx.post(
        f"{server.url}/compare",
        json={"pairs": [{"prompt": MULTI[:-1], "a": "7", "b": "8"}], "raw": True},
    ).json()["results"][0]
    assert agrees(family, "prompt + response", pair["reward_a"], reference.chat(MULTI))


def test_plain_text_scores_as_the_tokenizer_reads_it(
    served: tuple[str, Server, Reference],
) -> None:
    family, server, reference = served
    texts = ["A plain answer.", "<s>Already has its BOS.", "Ends with its EOS.</s>"]
    rewards, _ = served_rewards(server, {"texts": texts})
    assert agrees(family, "plain text", rewards[0], reference.text(texts[0]))
    # read at the EOS, as transformers reads it, also where EOS stands in for padding
    assert agrees(family, "plain text ending with EOS", rewards[2], reference.text(texts[2]))
    without_bos = reference.tokenizer(texts[1], add_special_tokens=False, return_tensors="pt")
    import torch

    with torch.no_grad():
        expected = float(reference.model(**without_bos).logits[0, 0])
    assert agrees(family, "plain text", rewards[1], expected)  # no second BOS


def test_over_long_conversations_drop_the_oldest_turns(
    served: tuple[str, Server, Reference],
) -> None:
    family, server, reference = served
    old = [
        {"role": "user", "content": "an old question " * 12},
        {"role": "assistant", "content": "an old answer " * 12},
    ]
    long_conversation = [SYSTEM, *old, *old, *SHORT]
    (reward,), usage = served_rewards(server, {"items": [{"messages": long_conversation}]})
    assert usage["truncated"] == 1
    assert agrees(
        family, "over-long (oldest turns dropped)", reward, reference.chat([SYSTEM, *SHORT])
    )


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"messages": [{"role": "user", "content": "no"}]}, ["items[0].messages", "end with"]),
        ({"messages": [{"role": "alien", "content": "x"}]}, ["items[0].messages[0]", "alien"]),
        ({"messages": SHORT, "prompt": "x"}, ["no 'prompt'"]),
        ({"prompt": "x"}, ["either 'response'"]),
    ],
)  # fmt: skip
def test_bad_conversations_are_422_naming_the_field(
    served: tuple[str, Server, Reference], item: dict[str, Any], words: list[str]
) -> None:
    _, server, _ = served
    answer = httpx.post(f"{server.url}/score", json={"items": [item]})
    assert answer.status_code == 422, answer.text
    for word in words:
        assert word in answer.json()["error"]


def test_get_reward_reads_each_policy_format_with_the_models_template(
    served: tuple[str, Server, Reference],
) -> None:
    from tests.rankrm.test_formats import DECODED

    family, server, reference = served
    names = sorted(DECODED)
    queries = [DECODED[name][0] for name in names] + ["A reply in no chat format."]
    answer = httpx.post(f"{server.url}/get_reward", json={"query": queries}, timeout=30).json()
    logs = answer["extra_logs"]
    expected = [reference.chat(DECODED[name][1]) for name in names]
    expected.append(reference.text(queries[-1]))
    for i, name in enumerate(names):
        shape = f"/get_reward, {name} query"
        assert agrees(family, shape, logs["raw_reward"][i], expected[i])
    assert agrees(family, "/get_reward, no format", logs["raw_reward"][-1], expected[-1])
    from rankrm.formats import FORMAT_IDS

    assert logs["policy_format"] == [FORMAT_IDS[name] for name in names] + [0]
    assert logs["truncated"] == [0] * len(queries)
    assert len(answer["rewards"]) == len(answer["scores"]) == len(queries)


# ----------------------------------------------------------------------- encoder models

ENCODERS = ["bert", "roberta", "deberta-v2", "modernbert"]
PAIRS = [("the question", "good film"), (None, "a very good movie"), ("q a", "bad plot")]


@pytest.fixture(scope="module", params=ENCODERS)
def served_encoder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Reference]]:
    """Encoder reward models have no chat template: (prompt, response) pair encoding."""
    from tests.training.test_export import architectures
    from training.export import ExportConfig, export_model

    tmp = tmp_path_factory.mktemp(request.param)
    folder = architectures(tmp)[request.param]
    out = tmp / "model"
    export_model(ExportConfig(folder, out, reference=texts_file(tmp / "ref.jsonl")))
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        yield server, Reference(folder)


def test_encoders_score_the_pair_encoding_as_transformers(
    served_encoder: tuple[Server, Reference],
) -> None:
    import torch

    server, reference = served_encoder
    family = reference.model.config.model_type
    assert server.engine.manifest.template == "pair"
    items: list[dict[str, Any]] = [{"prompt": p, "response": r} for p, r in PAIRS]
    items.append({"messages": [{"role": "user", "content": "the plot"}, *SHORT[1:]]})
    rewards, _ = served_rewards(server, {"items": items})
    inputs = [*PAIRS, ("user: the plot", "4.")]  # messages: prompt turns rendered as text
    expected = []
    for prompt, response in inputs:
        args = (prompt, response) if prompt else (response,)
        encoded = dict(reference.tokenizer(*args, return_tensors="pt"))
        if getattr(reference.model.config, "type_vocab_size", 0) <= 1:
            # These tests give RoBERTa and DeBERTa the BERT tokenizer; their own would not
            # return token types, and the models have no embedding for type 1.
            encoded.pop("token_type_ids", None)
        with torch.no_grad():
            expected.append(float(reference.model(**encoded).logits[0, 0]))
    shapes = ["prompt + response", "plain text", "prompt + response", "messages"]
    for shape, got, want in zip(shapes, rewards, expected, strict=True):
        assert agrees(family, shape, got, want)


def test_a_template_that_refuses_the_conversation_is_422(
    served: tuple[str, Server, Reference],
) -> None:
    from rankrm.chat import ChatTemplate
    from tests.rankrm.test_chat import MISTRAL

    _, server, _ = served
    model = server.engine.model
    own = model.chat
    model.chat = ChatTemplate(MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"})
    try:  # Mistral's template raises on a system turn
        items = [{"messages": SHORT}, {"messages": [SYSTEM, *SHORT]}]
        answer = httpx.post(f"{server.url}/score", json={"items": items})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith("items[1]: the model's chat template refused")
        assert "alternate" in answer.json()["error"]
    finally:
        model.chat = own
    assert httpx.post(f"{server.url}/score", json={"items": items}).status_code == 200


# ------------------------------------------------------------------ OpenRLHF checkpoints
