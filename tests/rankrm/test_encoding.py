"""The text-to-tokens contract shared by training, export and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from rankrm.encoding import (
    EncodingSpec,
    Tokens,
    configure_tokenizer,
    encode,
    find_unicode_problem,
    pad_batch,
    render_messages,
    unicode_problem,
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
    # The prompt loses its start ("the movie was very"); the response is kept whole.
    assert enc.tokens == ["[CLS]", "good", "and", "the", "plot", "[SEP]", "nice", "[SEP]"]


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


def test_compact_tokens_keep_what_the_model_sees(tokenizer: Tokenizer) -> None:
    configured = configure_tokenizer(tokenizer, EncodingSpec(max_length=8))
    short, long = encode(configured, [None, "the question"], ["good", "good movie " * 500])
    compact = [Tokens.of(short), Tokens.of(long)]
    assert [list(t.ids) for t in compact] == [short.ids, long.ids]
    assert [list(t.type_ids) for t in compact] == [short.type_ids, long.type_ids]
    assert [t.truncated for t in compact] == [False, True]
    assert len(compact[1]) == 8
    both = pad_batch(compact, 0)
    assert np.array_equal(both.input_ids, pad_batch([short, long], 0).input_ids)


def test_unicode_problems_are_found_and_located() -> None:
    assert unicode_problem("plain") is None
    assert unicode_problem("caf\u00e9 \U0001f600 \x00") is None
    problem = unicode_problem("ab\ud800")
    assert problem is not None and "U+D800 at character 2" in problem
    value = {"a": ["ok", {"b": "x\udfff"}]}
    found = find_unicode_problem(value, "body")
    assert found is not None and found.startswith("body.a[1].b: not valid Unicode")
    key = find_unicode_problem({"ok": 1, "\udc00": 2})
    assert key is not None and key.startswith("object: a key is not valid Unicode")
    assert find_unicode_problem([1, None, "fine", {"k": 2.5}]) is None


def test_sequential_encoding_equals_the_batch_call(tokenizer: Tokenizer) -> None:
    configured = configure_tokenizer(tokenizer, EncodingSpec(max_length=12))
    prompts = [None, "the question", "", "the plot " * 20]
    responses = ["good", "bad movie", "fine", "very good acting " * 10]
    batch = encode(configured, prompts, responses)
    one_by_one = encode(configured, prompts, responses, parallel=False)
    assert [e.ids for e in one_by_one] == [e.ids for e in batch]
    assert [e.type_ids for e in one_by_one] == [e.type_ids for e in batch]
    assert [bool(e.overflowing) for e in one_by_one] == [False, False, False, True]
