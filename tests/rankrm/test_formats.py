"""Policy formats: decoded conversations split back into messages."""

from __future__ import annotations

import typing

import pytest

from app.config import Settings
from rankrm.formats import (
    DEEPSEEK_ASSISTANT,
    DEEPSEEK_BOS,
    DEEPSEEK_EOS,
    DEEPSEEK_USER,
    FORMAT_IDS,
    FORMATS,
    parse_conversation,
)

S, Q1, A1, Q2, A2 = "Be brief.", "Hi there", "Hello!", "What is 2 + 2?", "It is 4."
TURNS = [
    {"role": "user", "content": Q1},
    {"role": "assistant", "content": A1},
    {"role": "user", "content": Q2},
    {"role": "assistant", "content": A2},
]
WITH_SYSTEM = [{"role": "system", "content": S}, *TURNS]

# What a policy's rollout looks like decoded with its special tokens (EOS and padding after).
DECODED = {
    "chatml": (
        f"<|im_start|>system\n{S}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n"
        f"<|im_start|>assistant\n{A2}<|im_end|>\n<|endoftext|><|endoftext|>",
        WITH_SYSTEM,
    ),
    "llama3": (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{S}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q2}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A2}<|eot_id|><|end_of_text|>",
        WITH_SYSTEM,
    ),
    "gemma": (
        f"<bos><start_of_turn>user\n{Q1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n{A2}<end_of_turn>\n"
        "<eos><pad><pad>",
        TURNS,
    ),
    "phi3": (
        f"<|system|>\n{S}<|end|>\n<|user|>\n{Q1}<|end|>\n<|assistant|>\n{A1}<|end|>\n"
        f"<|user|>\n{Q2}<|end|>\n<|assistant|>\n{A2}<|end|>\n<|endoftext|>",
        WITH_SYSTEM,
    ),
    "deepseek": (
        f"{DEEPSEEK_BOS}{S}{DEEPSEEK_USER}{Q1}{DEEPSEEK_ASSISTANT}{A1}{DEEPSEEK_EOS}"
        f"{DEEPSEEK_USER}{Q2}{DEEPSEEK_ASSISTANT}{A2}{DEEPSEEK_EOS}",
        WITH_SYSTEM,
    ),
    "inst": (
        f"<s>[INST] <<SYS>>\n{S}\n<</SYS>>\n\n{Q1} [/INST] {A1}</s><s>[INST] {Q2} [/INST] {A2}</s>",
        WITH_SYSTEM,
    ),
    "human": (f"\n\nHuman: {Q1}\n\nAssistant: {A1}\n\nHuman: {Q2}\n\nAssistant: {A2}", TURNS),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_is_recognised_and_split(name: str) -> None:
    text, expected = DECODED[name]
    assert parse_conversation(text) == (name, expected)
    assert parse_conversation(text, only=name) == (name, expected)
    assert parse_conversation(text, only="none") == ("none", None)


@pytest.mark.parametrize(
    "text",
    [
        "just some text with no chat markers",
        "<|im_start|>user\nA question with no answer yet<|im_end|>\n<|im_start|>assistant\n",
        "\n\nHuman: hello",
        "",
    ],
)
def test_no_conversation_without_an_answer(text: str) -> None:
    assert parse_conversation(text) == ("none", None)


def test_every_format_has_a_number_and_a_setting() -> None:
    assert set(FORMAT_IDS) == {"none", *FORMATS}
    assert len(set(FORMAT_IDS.values())) == len(FORMAT_IDS)
    setting = typing.get_args(Settings.model_fields["policy_format"].annotation)
    assert set(setting) == {"auto", "none", *FORMATS}
