"""Chat templates rendered as transformers renders them, without transformers.

A reward model whose tokenizer carries a ``chat_template`` was trained on conversations
rendered by it: ``tokenizer.apply_chat_template(messages, tokenize=True)``, which renders the
Jinja template (no generation prompt) and tokenises the text *without* adding special tokens
(the template writes BOS itself where the model wants one). The service must do the same
with jinja2 alone, so its container stays free of torch and transformers.

The environment copies transformers' (``transformers.utils.chat_template_utils``): a sandbox
that refuses attribute tricks, ``trim_blocks`` and ``lstrip_blocks``, loop controls, the
``{% generation %}`` block (rendered as its body), ``raise_exception``, ``strftime_now``, a
``tojson`` filter without HTML escaping, and namespaces that refuse underscore names. The
template's variables are the messages, ``add_generation_prompt=False`` and the tokenizer's
special tokens (``bos_token``, ``eos_token``...). Tests compare renders with transformers'
own on real templates (ChatML/Qwen, Llama 3, Llama 2/Mistral, Gemma, Phi-3, Zephyr).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.nodes
import jinja2.parser
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, Any]

# The special tokens a template may refer to, as transformers passes them.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class ChatTemplateError(ValueError):
    """The template refused the conversation (its own ``raise_exception``) or failed."""


class _Generation(Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body (transformers uses the
    block to find assistant tokens; the text is the same)."""

    tags = {"generation"}  # noqa: RUF012 (jinja2 declares it an instance variable)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render", [], [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        rendered: str = caller()
        return rendered


class _Namespace(jinja2.utils.Namespace):
    """A namespace that refuses underscore-prefixed names (no way to CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed names, got {name!r}"
            )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env


class ChatTemplate:
    """A compiled chat template and the special tokens it is rendered with."""

    def __init__(
        self,
        source: str,
        special_tokens: Mapping[str, str] | None = None,
        *,
        append_eos: bool = False,
    ) -> None:
        """``append_eos``: the model reads its reward at an EOS after the conversation
        (OpenRLHF's reward models are trained and served so): renders end with it."""
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.append_eos = append_eos

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The conversation as the model reads it (no generation prompt by default)."""
        plain = [dict(message) for message in messages]
        try:
            return self.ending(
                self._template.render(
                    messages=plain,
                    add_generation_prompt=add_generation_prompt,
                    **self.special_tokens,
                )
            )
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template refused it: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ChatTemplateError(f"the model's chat template failed on it: {exc}") from exc

    def ending(self, text: str) -> str:
        """``text`` with the EOS the model reads its reward at, when it wants one."""
        eos = self.special_tokens.get("eos_token", "")
        if self.append_eos and eos and not text.endswith(eos):
            return text + eos
        return text
