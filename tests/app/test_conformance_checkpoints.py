"""Conformance of checkpoints made by other tools and of other precisions: OpenRLHF's
reward models, TRL's RewardTrainer output, multi-output heads, int8 and fp16 exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rankrm.runtime import OnnxRewardModel
from tests.app.conformance import (
    MAX_LENGTH,
    MULTI,
    SHORT,
    SYSTEM,
    Reference,
    agrees,
    reward_model_folder,
    served_rewards,
)
from tests.app.conftest import ControlledEngine, running
from tests.conftest import texts_file

pytestmark = pytest.mark.slow


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
