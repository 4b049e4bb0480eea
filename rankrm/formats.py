"""Policy chat formats: a policy's rendered conversation, split back into messages.

OpenRLHF sends the reward model ``query`` = the policy's prompt + response *decoded with
special tokens*: the policy's own chat template, BOS, EOS and padding included. A reward
model with a different template must not read that text as it stands: the conversation is
recovered here and rendered again with the reward model's template.

Recognised (the first whose markers the text holds, in this order):

=========== ===================================================================== ==
name        shape                                                                 id
=========== ===================================================================== ==
chatml      ``<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nA<|im_end|>``   1
llama3      ``<|start_header_id|>user<|end_header_id|>\\n\\nQ<|eot_id|>...``          2
gemma       ``<start_of_turn>user\\nQ<end_of_turn>\\n<start_of_turn>model\\nA``        3
phi3        ``<|user|>\\nQ<|end|>\\n<|assistant|>\\nA<|end|>``                          4
deepseek    DeepSeek's User and Assistant tokens (with fullwidth bars), then EOS          5
inst        ``<s>[INST] <<SYS>>\\nS\\n<</SYS>>\\n\\nQ [/INST] A</s>`` (Llama 2, Mistral) 6
human       ``\\n\\nHuman: Q\\n\\nAssistant: A`` (Anthropic HH, plain chat)              7
=========== ===================================================================== ==

Text in none of them (id 0) is scored as it stands. Padding, BOS and EOS strings around the
text are stripped first; a conversation is only returned when it ends with a non-empty
assistant answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Turns = list[dict[str, str]]

FORMAT_IDS = {
    "none": 0,
    "chatml": 1,
    "llama3": 2,
    "gemma": 3,
    "phi3": 4,
    "deepseek": 5,
    "inst": 6,
    "human": 7,
}
"""Each format's number, as ``extra_logs`` reports it (numbers: trainers log them as
tensors)."""

_BAR = "\uff5c"  # DeepSeek's special tokens are written with the fullwidth vertical line
DEEPSEEK_USER = f"<{_BAR}User{_BAR}>"
DEEPSEEK_ASSISTANT = f"<{_BAR}Assistant{_BAR}>"
DEEPSEEK_BOS = f"<{_BAR}begin\u2581of\u2581sentence{_BAR}>"
DEEPSEEK_EOS = f"<{_BAR}end\u2581of\u2581sentence{_BAR}>"

# Special-token strings a decoded policy output may start or end with.
_EDGE_TOKENS = (
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|begin_of_text|>",
    "<|eot_id|>",
    DEEPSEEK_BOS,
    DEEPSEEK_EOS,
    "<pad>",
    "<bos>",
    "<eos>",
    "<s>",
    "</s>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
)


def strip_edges(text: str) -> str:
    """Remove padding, BOS and EOS strings (and whitespace) around ``text``."""
    changed = True
    while changed:
        changed = False
        stripped = text.strip()
        for token in _EDGE_TOKENS:
            if stripped.startswith(token) and token not in ("<|im_end|>", "<|end|>"):
                stripped, changed = stripped[len(token) :], True
            if stripped.endswith(token):
                stripped, changed = stripped[: -len(token)], True
        text = stripped
    return text.strip()


def _role(name: str) -> str:
    name = name.strip().lower()
    return {"model": "assistant", "gpt": "assistant", "human": "user"}.get(name, name)


def _by_markers(text: str, pattern: str) -> Turns:
    return [
        {"role": _role(m.group("role")), "content": m.group("content").strip()}
        for m in re.finditer(pattern, text, flags=re.DOTALL)
    ]


def _chatml(text: str) -> Turns:
    return _by_markers(text, r"<\|im_start\|>(?P<role>\w+)\n(?P<content>.*?)(?=<\|im_end\|>|$)")


def _llama3(text: str) -> Turns:
    return _by_markers(
        text,
        r"<\|start_header_id\|>(?P<role>\w+)<\|end_header_id\|>\n\n(?P<content>.*?)"
        r"(?=<\|eot_id\|>|<\|start_header_id\|>|$)",
    )


def _gemma(text: str) -> Turns:
    return _by_markers(
        text,
        r"<start_of_turn>(?P<role>\w+)\n(?P<content>.*?)(?=<end_of_turn>|<start_of_turn>|$)",
    )


def _phi3(text: str) -> Turns:
    return _by_markers(
        text,
        r"<\|(?P<role>system|user|assistant)\|>\n(?P<content>.*?)(?=<\|end\|>|<\|(?:system|user|assistant)\|>|$)",
    )


def _deepseek(text: str) -> Turns:
    turns: Turns = []
    head, *rest = re.split(f"({re.escape(DEEPSEEK_USER)}|{re.escape(DEEPSEEK_ASSISTANT)})", text)
    if head.strip():
        turns.append({"role": "system", "content": head.strip()})
    for marker, content in zip(rest[::2], rest[1::2], strict=False):
        role = "user" if marker == DEEPSEEK_USER else "assistant"
        turns.append({"role": role, "content": content.replace(DEEPSEEK_EOS, "").strip()})
    return turns


def _inst(text: str) -> Turns:
    turns: Turns = []
    for block in re.split(r"(?:<s>)?\s*\[INST\]", text)[1:]:
        question, _, answer = block.partition("[/INST]")
        system = re.match(r"\s*<<SYS>>\n(?P<s>.*?)\n<</SYS>>\n\n(?P<q>.*)", question, re.DOTALL)
        if system:
            turns.append({"role": "system", "content": system.group("s").strip()})
            question = system.group("q")
        turns.append({"role": "user", "content": question.strip()})
        if _ or answer.strip():
            turns.append({"role": "assistant", "content": answer.replace("</s>", "").strip()})
    return turns


def _human(text: str) -> Turns:
    turns: Turns = []
    parts = re.split(r"(?:^|\n\n)(Human|Assistant):", text)
    for role, content in zip(parts[1::2], parts[2::2], strict=False):
        turns.append({"role": _role(role), "content": content.strip()})
    return turns


_PARSERS: dict[str, tuple[Callable[[str], bool], Callable[[str], Turns]]] = {
    "chatml": (lambda t: "<|im_start|>" in t, _chatml),
    "llama3": (lambda t: "<|start_header_id|>" in t, _llama3),
    "gemma": (lambda t: "<start_of_turn>" in t, _gemma),
    "phi3": (lambda t: "<|user|>" in t and "<|assistant|>" in t, _phi3),
    "deepseek": (lambda t: DEEPSEEK_USER in t and DEEPSEEK_ASSISTANT in t, _deepseek),
    "inst": (lambda t: "[INST]" in t and "[/INST]" in t, _inst),
    "human": (lambda t: bool(re.search(r"(?:^|\n\n)Human:", t)) and "Assistant:" in t, _human),
}
FORMATS = tuple(_PARSERS)


def parse_conversation(text: str, only: str = "auto") -> tuple[str, Turns | None]:
    """(format name, turns) of a policy's decoded conversation; ("none", None) when the text
    is in no known format, or does not end with an assistant's non-empty answer.

    ``only`` forces one format (``auto``: try them all in order; ``none``: never parse)."""
    if only == "none":
        return "none", None
    names = FORMATS if only == "auto" else (only,)
    for name in names:
        recognise, parse = _PARSERS[name]
        if not recognise(text):
            continue
        turns = [t for t in parse(text) if t["content"] or t["role"] != "system"]
        for turn in turns:
            turn["content"] = strip_edges(turn["content"])
        if len(turns) >= 2 and turns[-1]["role"] == "assistant" and turns[-1]["content"]:
            return name, turns
        return "none", None
    return "none", None
