"""Chat templates rendered without transformers, compared with transformers' own rendering
of the same template (the reference), on the templates of the common model families."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rankrm.chat import ChatTemplate, ChatTemplateError
from tests.conftest import CHATML, build_chat_tokenizer

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + "
    "'<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
    "{% else %}{{ eos_token }}{% endif %}"
)
# Zephyr's, written over several lines: trim_blocks and lstrip_blocks decide the output.
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
# Features real templates use: namespace, tojson, the generation block, loop controls.
FEATURES = """{%- set ns = namespace(turns=0) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{%- continue -%}{%- endif -%}
  {%- set ns.turns = ns.turns + 1 -%}
  {%- if message['role'] == 'assistant' -%}
    {% generation %}{{ message['content'] }}{% endgeneration %}
  {%- else -%}
    {{ ns.turns }}:{{ message | tojson }}
  {%- endif %}
{% endfor -%}"""

TEMPLATES = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "phi3": PHI3,
    "zephyr": ZEPHYR,
    "features": FEATURES,
}
SINGLE = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "  It is 4. "},
]
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": 'Name a prime, "quoted" & <tagged>: ünïcode ✓'},
    {"role": "assistant", "content": "7"},
]
SYSTEM = [{"role": "system", "content": "Be brief."}, *SINGLE]


def transformers_tokenizer(folder: Path, template: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_chat_tokenizer(folder, template))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", [SINGLE, MULTI, SYSTEM], ids=["single", "multi", "sys"])
def test_render_equals_transformers(
    tmp_path: Path, name: str, conversation: list[dict[str, str]]
) -> None:
    reference = transformers_tokenizer(tmp_path, TEMPLATES[name])
    ours = ChatTemplate(TEMPLATES[name], reference.special_tokens_map)
    try:
        expected = reference.apply_chat_template(conversation, tokenize=False)
    except Exception as exc:  # the template refuses it (Gemma, Mistral: no system turn)
        with pytest.raises(ChatTemplateError, match="refused") as caught:
            ours.render(conversation)
        assert str(exc) in str(caught.value)
        return
    assert ours.render(conversation) == expected
    with_prompt = reference.apply_chat_template(
        conversation[:-1], tokenize=False, add_generation_prompt=True
    )
    assert ours.render(conversation[:-1], add_generation_prompt=True) == with_prompt


def test_template_errors_are_clear() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")
    alternating = ChatTemplate(MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"})
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        alternating.render([{"role": "assistant", "content": "first"}])


def test_the_sandbox_refuses_escapes() -> None:
    escape = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        escape.render(SINGLE)
    underscore = ChatTemplate("{% set ns = namespace(_x=1) %}{{ ns }}")
    with pytest.raises(ChatTemplateError):
        underscore.render(SINGLE)
