"""app/scoring.py: inputs checked and shaped before they reach the batcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.errors import ErrorKind, ServiceError
from app.scoring import check_inputs, conversation_input, prompt_input, slices


def test_slices_cover_every_item_once_within_the_budget() -> None:
    sizes = [5, 5, 5, 20, 1, 1, 9]
    ranges = slices(sizes, 10)
    assert ranges == [(0, 2), (2, 3), (3, 4), (4, 6), (6, 7)]
    assert [i for a, b in ranges for i in range(a, b)] == list(range(len(sizes)))
    assert slices([], 10) == []


def test_chat_prompts_become_standard_turns_and_bad_messages_are_named() -> None:
    assert prompt_input("text", "items[0].prompt") == "text"
    assert prompt_input([{"from": "human", "value": "hi"}], "p") == [
        {"role": "user", "content": "hi"}
    ]
    with pytest.raises(ServiceError, match=r"items\[2\].prompt\[1\]: unknown message role"):
        prompt_input([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
                     "items[2].prompt")  # fmt: skip


def test_a_conversation_must_end_with_the_answer_scored() -> None:
    prompt, answer = conversation_input(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "c"
    )
    assert (prompt, answer) == ([{"role": "user", "content": "q"}], "a")
    with pytest.raises(ServiceError, match="c: a conversation to score must end with"):
        conversation_input([{"role": "user", "content": "q"}], "c")


def test_check_inputs_names_the_first_offender() -> None:
    settings = Settings(model_dir=Path("unused"), max_items=2, max_text_chars=10)
    with pytest.raises(ServiceError) as empty:
        check_inputs(settings, [], [], ["texts"])
    assert empty.value.kind is ErrorKind.EMPTY_INPUT
    with pytest.raises(ServiceError) as many:
        check_inputs(settings, [None] * 3, ["a"] * 3, ["texts"] * 3)
    assert many.value.kind is ErrorKind.TOO_LARGE and "limit is 2" in many.value.message
    check_inputs(settings, [None, None], ["short", "fine"], ["texts[0]", "texts[1]"])
