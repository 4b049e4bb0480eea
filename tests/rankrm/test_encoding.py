"""The text-to-tokens contract shared by training, export and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from rankrm.encoding import (
    EncodingSpec,
    configure_tokenizer,
    encode,
    pad_batch,
    render_messages,
)


@pytest.fixture
def tokenizer(tiny_backbone: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_backbone / "tokenizer.json"))


def test_prompt_and_response_use_the_pair_encoding(tokenizer: Tokenizer) -> None:
    tok = configure_tokenizer(tokenizer, EncodingSpec())
    with_prompt, alone, empty_prompt = encode(tok, ["the question", None, ""], ["good"] * 3)
    assert with_prompt.tokens == ["[CLS]", "the", "question", "[SEP]", "good", "[SEP]"]
    assert with_prompt.type_ids == [0, 0, 0, 0, 1, 1]
    assert alone.tokens == empty_prompt.tokens == ["[CLS]", "good", "[SEP]"]


def test_left_truncation_keeps_the_end_of_a_long_prompt(tokenizer: Tokenizer) -> None:
    tok = configure_tokenizer(tokenizer, EncodingSpec(max_length=8, truncation_side="left"))
    (enc,) = encode(tok, ["the movie was very good and the plot"], ["nice"])
    assert len(enc.ids) == 8
    assert enc.tokens == ["[CLS]", "and", "the", "plot", "[SEP]", "nice", "[SEP]"] or (
        enc.tokens[-3:] == ["[SEP]", "nice", "[SEP]"] and enc.tokens[-4] == "plot"
    )


def test_right_truncation_keeps_the_start(tokenizer: Tokenizer) -> None:
    tok = configure_tokenizer(tokenizer, EncodingSpec(max_length=8, truncation_side="right"))
    (enc,) = encode(tok, [None], ["the movie was very good and the plot was fine"])
    assert enc.tokens == ["[CLS]", "the", "movie", "was", "very", "good", "and", "[SEP]"]


def test_configure_clears_fixed_padding_and_leaves_the_original(tokenizer: Tokenizer) -> None:
    tokenizer.enable_padding(length=32)
    tok = configure_tokenizer(tokenizer, EncodingSpec())
    assert len(encode(tok, [None], ["good"])[0].ids) == 3
    assert tokenizer.padding is not None


def test_pad_batch_pads_to_the_longest_only(tokenizer: Tokenizer) -> None:
    tok = configure_tokenizer(tokenizer, EncodingSpec())
    batch = pad_batch(encode(tok, [None, "q"], ["good", "the plot was good"]), pad_id=0)
    assert batch.input_ids.shape == (2, 8)
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 8]
    assert batch.input_ids.dtype == np.int64
    assert (batch.input_ids[0, 3:] == 0).all()


def test_render_messages_accepts_both_styles() -> None:
    text = render_messages(
        [{"from": "human", "value": "Hi"}, {"role": "assistant", "content": "Hello"}]
    )
    assert text == "user: Hi\n\nassistant: Hello"
    with pytest.raises(ValueError, match="unknown message role 'alien'"):
        render_messages([{"role": "alien", "content": "x"}])


def test_spec_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_length"):
        EncodingSpec(max_length=2)
    with pytest.raises(ValueError, match="truncation_side"):
        EncodingSpec(truncation_side="middle")  # type: ignore[arg-type]
