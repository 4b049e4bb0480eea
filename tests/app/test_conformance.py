"""Conformance: a reward model from elsewhere, exported and served over HTTP, gives the reward
transformers gives for the same conversation (its own tokenizer's chat template, its own
model), within 1e-4, for each decoder family and each input shape the service takes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rankrm.runtime import OnnxRewardModel
from tests.app.conftest import ControlledEngine, Server, running
from tests.conftest import build_chat_tokenizer, texts_file, tiny_dims

MAX_LENGTH = 384
FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "gpt-neox", "llama-left-nopad"]

SYSTEM = {"role": "system", "content": "Be brief."}
SHORT = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a prime, ünïcode ✓"},
    {"role": "assistant", "content": "7"},
]

pytestmark = pytest.mark.slow


def reward_model_folder(folder: Path, family: str) -> Path:
    """A tiny random decoder reward model (num_labels=1) with a ChatML tokenizer.
    ``llama-left-nopad``: a Llama whose tokenizer pads on the left and, like many decoder
    checkpoints, has no pad token (nor has its config)."""
    if family == "llama-left-nopad":
        reward_model_folder(folder, "llama")
        edits: dict[str, Callable[[dict[str, Any]], object]] = {
            "tokenizer_config.json": lambda c: c.update(padding_side="left", pad_token=None),
            "special_tokens_map.json": lambda c: c.pop("pad_token", None),
            "config.json": lambda c: c.update(pad_token_id=None),
        }
        for name, edit in edits.items():
            if (folder / name).is_file():
                content = json.loads((folder / name).read_text())
                edit(content)
                (folder / name).write_text(json.dumps(content))
        return folder
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Gemma2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    build_chat_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    small: dict[str, Any] = dict(
        **tiny_dims(len(tokenizer), MAX_LENGTH + 64),
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    config = {
        "llama": LlamaConfig,
        "qwen2": Qwen2Config,
        "qwen3": Qwen3Config,
        "mistral": MistralConfig,
        "gemma2": Gemma2Config,
        "gpt-neox": GPTNeoXConfig,
    }[family](**small)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return folder


class Reference:
    """transformers' reward for a conversation or a text: the definition of right."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).eval()

    def chat(self, messages: list[dict[str, str]]) -> float:
        import torch

        encoded: Any = self.tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            return float(self.model(**encoded).logits[0, 0])

    def text(self, text: str) -> float:
        import torch

        with torch.no_grad():
            return float(self.model(**self.tokenizer(text, return_tensors="pt")).logits[0, 0])


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


MATRIX: dict[str, dict[str, float]] = {}  # family -> input shape -> max |served - expected|


def agrees(family: str, shape: str, served: Any, expected: Any) -> bool:
    """Record the largest difference for the matrix; true when within 1e-4 everywhere."""
    pairs = list(zip(np.atleast_1d(served), np.atleast_1d(expected), strict=True))
    worst = max(abs(float(a) - float(b)) for a, b in pairs)
    row = MATRIX.setdefault(family, {})
    row[shape] = max(row.get(shape, 0.0), worst)
    return worst <= 1e-4


@pytest.fixture(scope="module", autouse=True)
def write_matrix() -> Iterator[None]:
    """With RANKRM_CONFORMANCE_REPORT set (make conformance), write the matrix there."""
    yield
    report = os.environ.get("RANKRM_CONFORMANCE_REPORT")
    if report:
        Path(report).write_text(json.dumps(MATRIX, indent=2, sort_keys=True) + "\n")
        shapes = sorted({shape for row in MATRIX.values() for shape in row})
        families = sorted(MATRIX)
        lines = ["| input | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
        for shape in shapes:
            cells = [f"{MATRIX[f][shape]:.0e}" if shape in MATRIX[f] else "-" for f in families]
            lines.append(f"| {shape} | " + " | ".join(cells) + " |")
        title = [
            "# Served rewards against transformers",
            "",
            "Largest |served - transformers| reward per model family and input shape: tiny",
            "random models exported by `rankrm export`, served by `rankrm serve` over HTTP,",
            "compared with transformers' own tokenizer (chat template) and model. Written by",
            "`make conformance` (tests/app/test_conformance.py, which asserts <= 1e-4 in fp32).",
            "",
            "Rows `int8:` and `fp16:` are in reward standard deviations (the test's bars: 0.25",
            "and 0.05). `openrlhf (...)` columns are checked against OpenRLHF's own forward",
            "and serve_rm tokenisation (normalised by the checkpoint's mean/std), `(3 outputs)`",
            "against transformers' three logits, `(TRL-trained)` is TRL's RewardTrainer output.",
            "",
        ]
        Path(report).with_suffix(".md").write_text("\n".join(title + lines) + "\n")


def served_rewards(server: Server, body: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    answer = httpx.post(f"{server.url}/score", json={**body, "raw": True}, timeout=30)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["usage"]["truncated"] == sum(data["truncated"])  # per item and in all
    return data["rewards"], data["usage"]


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

OPENRLHF_STATS = (0.25, 0.5)  # config.mean, config.std as its trainer writes them


def openrlhf_checkpoint(folder: Path, prefix: str) -> Path:
    """A tiny Llama reward model saved as OpenRLHF's trainer saves one: its ``RewardModel``
    class (architectures), the backbone under ``model.``, a bias-free value head named by
    ``value_head_prefix``, mean/std in the config, a left-padding tokenizer whose pad token
    is its EOS, and no num_labels."""
    from safetensors.torch import load_file, save_file

    reward_model_folder(folder, "llama")
    weights = load_file(str(folder / "model.safetensors"))
    weights[f"{prefix}.weight"] = weights.pop("score.weight")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    for key in ("id2label", "label2id", "num_labels"):
        config.pop(key, None)
    mean, std = OPENRLHF_STATS
    config.update(
        architectures=["RewardModel"], value_head_prefix=prefix, normalize_reward=False,
        mean=mean, std=std, use_cache=False,
    )  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer.update(padding_side="left", pad_token="</s>")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return folder


class OpenRLHFServeRM:
    """OpenRLHF's ``serve_rm`` with ``--reward.normalize_enable``: its tokenisation
    (``openrlhf/cli/serve_rm.py``) and its reward model's forward
    (``openrlhf/models/model.py``, ``_get_reward_model``), copied from OpenRLHF (Apache-2.0,
    github.com/OpenRLHF/OpenRLHF) with only the model construction adapted."""

    def __init__(self, folder: Path, prefix: str) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        assert self.tokenizer.padding_side == "left"
        self.model = AutoModel.from_pretrained(folder).eval()  # the backbone, no head
        head = load_file(str(folder / "model.safetensors"))[f"{prefix}.weight"]
        self.head = torch.nn.Linear(head.shape[1], 1, bias=False)
        self.head.weight.data = head
        config = json.loads((folder / "config.json").read_text())
        self.mean, self.std = config["mean"], config["std"]

    def rewards(self, texts: list[str]) -> list[float]:
        import torch

        inputs = self.tokenizer(
            texts, return_tensors="pt", add_special_tokens=False, max_length=MAX_LENGTH,
            padding=True, truncation=True,
        )  # fmt: skip
        attention_mask = inputs["attention_mask"]
        with torch.no_grad():
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
            outputs = self.model(
                inputs["input_ids"], attention_mask=attention_mask, position_ids=position_ids
            )
            last_hidden_states = outputs["last_hidden_state"]
            values = self.head(last_hidden_states).squeeze(-1)
            eos_indices = (
                attention_mask.size(1)
                - 1
                - attention_mask.long().fliplr().argmax(dim=1, keepdim=True)
            )
            reward = values.gather(dim=1, index=eos_indices).squeeze(1)
            reward = (reward - self.mean) / self.std
        return [float(r) for r in reward]


@pytest.mark.parametrize("prefix", ["score", "value_head"])
def test_an_openrlhf_checkpoint_serves_as_openrlhf_serve_rm_does(
    prefix: str, tmp_path: Path
) -> None:
    """Rewards normalised with the checkpoint's mean/std; raw rewards in extra_logs."""
    from training.export import ExportConfig, export_model

    folder = openrlhf_checkpoint(tmp_path / "checkpoint", prefix)
    out = tmp_path / "model"
    report = export_model(
        ExportConfig(folder, out, reference=texts_file(tmp_path / "r.jsonl"), max_length=MAX_LENGTH)
    )
    manifest = report.manifest
    assert manifest.pooling == "last-token-by-attention-mask"
    assert (manifest.normalization.offset, manifest.normalization.scale) == OPENRLHF_STATS
    reference = OpenRLHFServeRM(folder, prefix)

    def chat(messages: list[dict[str, str]]) -> str:
        return str(reference.tokenizer.apply_chat_template(messages, tokenize=False))

    queries = [
        chat(SHORT) + "</s>",  # a policy with the same template, its EOS
        chat(MULTI) + "</s>",
        "<s>A reply in no chat format.</s>",  # decoded with special tokens: BOS and EOS
        "<s>A reply without its EOS.",  # appended, as OpenRLHF's trainer does
    ]
    # serve_rm scores a query as sent; its trainer (and serve_rm before 2025-05) ends it
    # with EOS, so rankrm does too: the reference is given the EOS the query lacks.
    ended = [q if q.endswith("</s>") else q + "</s>" for q in queries]
    family = f"openrlhf ({prefix} head)"
    mean, std = OPENRLHF_STATS
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        answer = httpx.post(f"{server.url}/get_reward", json={"query": queries}, timeout=30)
        assert answer.status_code == 200, answer.text
        rewards = answer.json()["rewards"]
        assert agrees(family, "/get_reward, normalised", rewards, reference.rewards(ended))
        raw = answer.json()["extra_logs"]["raw_reward"]
        np.testing.assert_allclose(np.array(raw), np.array(rewards) * std + mean, atol=1e-5)
        # a conversation: the model's template, then the EOS the reward is read at
        (reward,), _ = served_rewards(server, {"items": [{"messages": MULTI}]})
        expected = reference.rewards([chat(MULTI) + "</s>"])[0] * std + mean
        assert agrees(family, "messages, multi-turn", reward, expected)


# ------------------------------------------------------------------- TRL's reward trainer


def trl_trained(folder: Path, tmp: Path) -> Path:
    """A tiny Qwen2 reward model trained for a few steps by TRL's own ``RewardTrainer`` on
    conversational pairs, saved with ``trainer.save_model`` (its real output: chat template
    in chat_template.jinja, no num_labels key, pad id written into the config)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    reward_model_folder(tmp / "start", "qwen2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp / "start")
    model = AutoModelForSequenceClassification.from_pretrained(tmp / "start")

    def turn(question: str, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

    pairs = [("2 + 2?", "4", "5"), ("Capital of France?", "Paris", "Rome")] * 4
    data = Dataset.from_dict(
        {
            "chosen": [turn(q, good) for q, good, _ in pairs],
            "rejected": [turn(q, bad) for q, _, bad in pairs],
        }
    )
    args = RewardConfig(
        output_dir=str(tmp / "trl"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        bf16=False,
        activation_checkpointing=False,
        max_length=MAX_LENGTH,
        seed=0,
    )  # fmt: skip  (TRL's defaults: bf16, and a checkpointing alias transformers deprecates)
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(folder))
    return folder


def test_trls_reward_trainer_output_serves_as_transformers_scores_it(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="TRL is a dev dependency (pip install -e .[dev])")
    from training.export import ExportConfig, export_model

    folder = trl_trained(tmp_path / "checkpoint", tmp_path)
    assert (folder / "chat_template.jinja").is_file()
    assert "num_labels" not in json.loads((folder / "config.json").read_text())
    out = tmp_path / "model"
    export_model(
        ExportConfig(folder, out, reference=texts_file(tmp_path / "r.jsonl"), max_length=MAX_LENGTH)
    )
    reference = Reference(folder)
    conversations = [SHORT, MULTI, [SYSTEM, *SHORT]]
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        rewards, _ = served_rewards(server, {"items": [{"messages": c} for c in conversations]})
        (text,), _ = served_rewards(server, {"texts": ["A plain answer.</s>"]})
    expected = [reference.chat(c) for c in conversations]
    assert agrees("qwen2 (TRL-trained)", "messages, batch of 3 lengths", rewards, expected)
    expected_text = reference.text("A plain answer.</s>")
    assert agrees("qwen2 (TRL-trained)", "plain text ending with EOS", text, expected_text)


# ------------------------------------------------------------------------- int8 exports

INT8_BAR_IN_STD = 0.25  # |served int8 - transformers fp32| <= 0.25 reward standard deviations


@pytest.mark.parametrize("family", ["llama", "qwen2", "bert"])
def test_int8_exports_stay_within_their_bar(family: str, tmp_path: Path) -> None:
    """An int8 model is not exact: its bar is a quarter of the reward's standard deviation
    (on the held-out texts the export measures), besides the export's own bars (ranking
    accuracy within 0.005 of fp32, batch invariance). Seeded: a random tiny model's rewards
    nearly tie, and some draws flip a held-out pair under any rounding."""
    import torch

    from tests.training.test_export import architectures
    from training.export import ExportConfig, export_model

    torch.manual_seed(0)
    if family == "bert":
        folder = architectures(tmp_path)["bert"]
    else:
        folder = reward_model_folder(tmp_path / "checkpoint", family)
    data = texts_file(tmp_path / "r.jsonl")
    out = tmp_path / "model"
    config = ExportConfig(folder, out, "int8", data, data, max_length=MAX_LENGTH)
    quantization = export_model(config).manifest.quantization
    assert quantization["meets_bars"], quantization["problems"]
    std = quantization["reward_std"]
    reference = Reference(folder)
    texts = ["A plain answer.", "a very good movie with a long and winding plot", "bad"]
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        rewards, _ = served_rewards(server, {"texts": texts})
        expected = [reference.text(t) for t in texts]
        if family != "bert":
            chats, _ = served_rewards(server, {"items": [{"messages": MULTI}]})
            rewards, expected = [*rewards, *chats], [*expected, reference.chat(MULTI)]
    in_std = [abs(a - b) / std for a, b in zip(rewards, expected, strict=True)]
    agrees(family, "int8: diff in reward std (bar 0.25)", max(in_std), 0.0)
    assert max(in_std) <= INT8_BAR_IN_STD, (in_std, std)


# ------------------------------------------------------------------ multi-output heads

HEADS = ["helpful", "harmless", "brief"]


@pytest.mark.parametrize("family", ["qwen2", "llama-left-nopad"])
def test_a_multi_output_head_serves_its_weighted_sum_and_every_output(
    family: str, tmp_path: Path
) -> None:
    """num_labels = 3: the reward is the weighted sum of transformers' three logits (weights
    given at export by name, the rest 0); every output on request, and in /get_reward's
    extra_logs."""
    from training.export import ExportConfig, export_model

    folder = reward_model_folder(tmp_path / "checkpoint", family)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=3, id2label=dict(enumerate(HEADS)), ignore_mismatched_sizes=True
    )
    model.save_pretrained(folder)
    weights = {"helpful": 0.7, "harmless": 0.3}
    out = tmp_path / "model"
    data = texts_file(tmp_path / "r.jsonl")
    manifest = export_model(
        ExportConfig(folder, out, reference=data, max_length=MAX_LENGTH, head_weights=weights)
    ).manifest
    assert (manifest.heads, manifest.head_weights) == (HEADS, [0.7, 0.3, 0.0])
    reference = Reference(folder)
    conversations = [SHORT, MULTI, [SYSTEM, *SHORT]]

    def logits(messages: list[dict[str, str]]) -> list[float]:
        import torch

        encoded: Any = reference.tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            return [float(v) for v in reference.model(**encoded).logits[0]]

    expected = [logits(c) for c in conversations]
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        body = {"items": [{"messages": c} for c in conversations], "raw": True}
        answer = httpx.post(f"{server.url}/score", json={**body, "return_heads": True}).json()
        plain = httpx.post(f"{server.url}/score", json=body).json()
        query = str(reference.tokenizer.apply_chat_template(MULTI, tokenize=False))
        logs = httpx.post(f"{server.url}/get_reward", json={"query": [query]}).json()
        info = httpx.get(f"{server.url}/info").json()
    family = f"{family} (3 outputs)"
    summed = [0.7 * h + 0.3 * s for h, s, _ in expected]
    assert agrees(family, "messages, batch of 3 lengths", answer["rewards"], summed)
    served_heads = [[one[name] for name in HEADS] for one in answer["heads"]]
    assert agrees(family, "every output (return_heads)", np.ravel(served_heads), np.ravel(expected))
    assert "heads" not in plain and plain["rewards"] == answer["rewards"]
    assert agrees(
        family, "/get_reward, head:NAME logs", logs["extra_logs"]["head:brief"], expected[1][2]
    )
    assert info["model"]["heads"] == HEADS


FP16_BAR_IN_STD = 0.05  # |served fp16 - transformers fp32| <= 0.05 reward standard deviations


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_fp16_exports_stay_within_their_bar(family: str, tmp_path: Path) -> None:
    """fp16 is for the CUDA provider; onnxruntime's CPU provider runs the same graph, so
    the export measures it here and this test checks it against transformers. (Not on the
    tiny random BERT: its rewards spread over 4e-5, below fp16's resolution.)"""
    import torch

    from training.export import ExportConfig, export_model

    torch.manual_seed(0)
    folder = reward_model_folder(tmp_path / "checkpoint", family)
    data = texts_file(tmp_path / "r.jsonl")
    out = tmp_path / "model"
    config = ExportConfig(folder, out, "fp16", data, data, max_length=MAX_LENGTH)
    quantization = export_model(config).manifest.quantization
    assert quantization["dtype"] == "float16" and quantization["meets_bars"]
    assert quantization["measured_on"] == "CPUExecutionProvider"
    import onnx

    graph = onnx.load(str(out / "model.onnx"))
    weights = {w.data_type for w in graph.graph.initializer if len(w.dims) == 2}
    assert weights == {onnx.TensorProto.FLOAT16}
    reference = Reference(folder)
    texts = ["A plain answer.", "a very good movie with a long and winding plot", "bad"]
    with running(ControlledEngine(OnnxRewardModel.load(out))) as server:
        rewards, _ = served_rewards(server, {"texts": texts})
    in_std = [
        abs(a - reference.text(t)) / quantization["reward_std"]
        for a, t in zip(rewards, texts, strict=True)
    ]
    agrees(family, "fp16: diff in reward std (bar 0.05)", max(in_std), 0.0)
    assert max(in_std) <= FP16_BAR_IN_STD, in_std
