"""The one contract for turning (prompt, response) into model input.

Training, export and serving all call these functions, so a text is tokenised the same
way everywhere. The choice, documented once:

* With a prompt, the model input is the tokenizer's *pair* encoding
  ``(prompt, response)``: for BERT-style tokenizers ``[CLS] prompt [SEP] response [SEP]``
  with token type 0 for the prompt and 1 for the response; decoder tokenizers use their
  own pair template (usually plain concatenation).
* Without a prompt (or with an empty one) the response is encoded alone.
* A chat prompt (a list of ``{"role"/"from", "content"/"value"}`` messages) is rendered
  to text by :func:`render_messages` first.
* Text must be valid Unicode: a lone surrogate (a JSON ``\\ud800``-``\\udfff`` escape that
  is not half of a high+low pair) is refused where it enters, naming the field
  (:func:`unicode_problem`, :func:`find_unicode_problem`); it is never silently replaced,
  since a reward for text other than what was sent is wrong without anyone knowing.
  Control characters, NUL included, are valid and tokenised as the tokenizer does.
* Over-long input is truncated with the ``longest_first`` strategy from the ``left`` by
  default: a long prompt loses its oldest turns and keeps the question being answered;
  the side is configurable and stored in the exported manifest.

Only ``tokenizers`` and ``numpy`` are imported here: the service must not pull torch.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from rankrm.chat import ChatTemplate

TruncationSide = Literal["left", "right"]

# Role names seen in the wild, mapped to one vocabulary.
_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


_SURROGATE = re.compile("[\ud800-\udfff]")


# Characters a reader does not see: controls (NUL included), format characters (zero-width
# spaces and joiners, bidi marks), combining marks with nothing to combine with, separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """Whether ``text`` has nothing visible in it: only whitespace and invisible characters
    (stops at the first visible character)."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate), or None when it is."""
    if text.isascii():
        return None
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        f"not valid Unicode: lone surrogate U+{ord(match.group()):04X} at character "
        f"{match.start()} (a \\ud800-\\udfff escape must be half of a high+low pair)"
    )


def find_unicode_problem(value: Any, where: str = "") -> str | None:
    """The first lone surrogate in a parsed JSON value (keys included), as
    ``field[index].key: problem``, or None."""
    if isinstance(value, str):
        problem = unicode_problem(value)
        return f"{where or 'value'}: {problem}" if problem else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_unicode_problem(item, f"{where}[{index}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            key_problem = unicode_problem(str(key))
            if key_problem:
                return f"{where or 'object'}: a key is {key_problem}"
            found = find_unicode_problem(item, name)
            if found:
                return found
    return None


def normalise_role(role: str) -> str:
    """Map a message role (``human``, ``gpt``, ``user``...) to user/assistant/system/tool."""
    try:
        return _ROLE_ALIASES[role.lower()]
    except KeyError:
        raise ValueError(
            f"unknown message role {role!r}; expected one of {sorted(_ROLE_ALIASES)}"
        ) from None


def normalise_message(message: Mapping[str, Any]) -> dict[str, str]:
    """A chat message as ``{"role", "content"}`` with a standard role name; accepts
    OpenAI-style ``{"role", "content"}`` and ShareGPT-style ``{"from", "value"}``."""
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    if not isinstance(role, str) or not isinstance(content, str):
        raise ValueError("a chat message needs a string role/from and content/value")
    return {"role": normalise_role(role), "content": content}


def render_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """Render chat messages (see :func:`normalise_message`) as ``role: content`` blocks
    separated by blank lines."""
    turns = [normalise_message(message) for message in messages]
    return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)


@dataclass(frozen=True)
class EncodingSpec:
    """How texts become token ids; stored in the exported manifest."""

    max_length: int = 128
    truncation_side: TruncationSide = "left"

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(
                f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}"
            )


def configure_tokenizer(tokenizer: Tokenizer, spec: EncodingSpec) -> Tokenizer:
    """Return a copy of ``tokenizer`` with padding cleared and truncation set from ``spec``.

    Padding is left to :func:`pad_batch` so each batch is padded only to its longest text.
    """
    configured = Tokenizer.from_str(tokenizer.to_str())
    configured.no_padding()
    configured.enable_truncation(
        spec.max_length, strategy="longest_first", direction=spec.truncation_side
    )
    return configured


def encode(
    tokenizer: Tokenizer,
    prompts: Sequence[str | None],
    responses: Sequence[str],
    *,
    parallel: bool = True,
) -> list[Encoding]:
    """Encode responses, each with its prompt when it has one (see the module docstring).

    ``parallel=False`` encodes one input after another on the calling thread. The batch
    call runs on the tokenizer's shared thread pool and waits for it: an event loop must not
    make that call, or it waits for whatever large job holds the pool."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    if not parallel:
        return [
            tokenizer.encode(prompt, response) if prompt else tokenizer.encode(response)
            for prompt, response in zip(prompts, responses, strict=True)
        ]
    inputs: list[str | tuple[str, str]] = [
        (prompt, response) if prompt else response
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    return tokenizer.encode_batch(inputs)


@dataclass(frozen=True, slots=True)
class Tokens:
    """One input as the model sees it, and nothing more: ``(T,)`` int64 token ids and type
    ids after truncation, and whether truncation cut it.

    A tokenizers ``Encoding`` of a long text also keeps every overflowing window, with token
    strings and offsets: about 3 MB for 100,000 characters. The service holds these instead,
    so what a queued text costs is bounded by ``max_length``, whatever was sent."""

    ids: np.ndarray
    type_ids: np.ndarray
    truncated: bool

    @classmethod
    def of(cls, encoding: Encoding) -> Tokens:
        """The compact form of one encoding."""
        return cls(
            np.asarray(encoding.ids, dtype=np.int64),
            np.asarray(encoding.type_ids, dtype=np.int64),
            bool(encoding.overflowing),
        )

    def __len__(self) -> int:
        return len(self.ids)


class _HasIds(Protocol):
    @property
    def ids(self) -> Any: ...

    @property
    def type_ids(self) -> Any: ...


@dataclass(frozen=True)
class Batch:
    """Right-padded model input; every array is ``(N, T)`` int64 with T the longest text."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


def pad_batch(encodings: Sequence[_HasIds], pad_id: int) -> Batch:
    """Pad encodings (or :class:`Tokens`) to the longest of them (never to a fixed length)."""
    if not encodings:
        raise ValueError("cannot pad an empty batch")
    longest = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), longest), pad_id, dtype=np.int64)  # (N, T)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)  # (N, T)
    types = np.zeros((len(encodings), longest), dtype=np.int64)  # (N, T)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    return Batch(input_ids=ids, attention_mask=mask, token_type_ids=types)


def _chat_tokens(tokenizer: Tokenizer, text: str) -> Tokens:
    """A rendered conversation's tokens: no special tokens added (the template wrote them),
    over-long text cut from the left (the truncation the tokenizer is configured with)."""
    return Tokens.of(tokenizer.encode(text, add_special_tokens=False))


def _droppable_turn(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the oldest prompt turn that can go (not a system message, not the final
    user question and answer), or None."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, message in enumerate(messages[: max(last_user, 0)]):
        if message.get("role") != "system":
            return i
    return None


def encode_conversation(
    tokenizer: Tokenizer, template: ChatTemplate, messages: Sequence[Mapping[str, Any]]
) -> Tokens:
    """A conversation rendered by the model's chat template and tokenised as
    ``tokenizer.apply_chat_template(messages, tokenize=True)`` does.

    Over ``max_length`` tokens, the oldest prompt turns go first (a turn with the replies
    after it, up to the next user turn, so templates that want alternating roles still
    render); if the last question and answer alone are too long, the start is cut and the
    end of the answer kept. ``truncated`` says whether anything was dropped."""
    kept = list(messages)
    tokens = _chat_tokens(tokenizer, template.render(kept))
    dropped = False
    while tokens.truncated:
        first = _droppable_turn(kept)
        if first is None:
            break
        end = first + 1
        while end < len(kept) and kept[end].get("role") not in ("user", "system"):
            end += 1
        del kept[first:end]
        dropped = True
        tokens = _chat_tokens(tokenizer, template.render(kept))
    if dropped and not tokens.truncated:
        return Tokens(tokens.ids, tokens.type_ids, truncated=True)
    return tokens


def encode_pairs(
    tokenizer: Tokenizer,
    chat: ChatTemplate | None,
    prompts: Sequence[str | None],
    responses: Sequence[str],
    *,
    parallel: bool = True,
) -> list[Tokens]:
    """The one entry point for ``(prompt, response)`` inputs, used by training's torch
    model, export and the service alike.

    Without a chat template: the pair encoding of :func:`encode`. With one: a prompt and
    its response are the conversation ``[user: prompt, assistant: response]`` rendered by
    the template; a response alone is tokenised as it stands, as ``tokenizer(text)`` would
    (special tokens added, except a BOS the text already starts with)."""
    if chat is None:
        return [Tokens.of(e) for e in encode(tokenizer, prompts, responses, parallel=parallel)]
    bos = chat.special_tokens.get("bos_token")
    tokens = []
    for prompt, response in zip(prompts, responses, strict=True):
        if prompt:
            conversation = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            tokens.append(encode_conversation(tokenizer, chat, conversation))
        else:
            response = chat.ending(response)
            has_bos = bos is not None and bos != "" and response.startswith(bos)
            tokens.append(Tokens.of(tokenizer.encode(response, add_special_tokens=not has_bos)))
    return tokens


def pad_token_id(tokenizer: Tokenizer, fallback: int | None = None) -> int:
    """The id used for padding: the tokenizer's pad token, else ``fallback``."""
    for token in ("[PAD]", "<pad>", "<|endoftext|>", "</s>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    if fallback is not None:
        return fallback
    raise ValueError("the tokenizer has no padding token and none was given")
