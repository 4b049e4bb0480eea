"""What the conformance tests share: tiny reward models from elsewhere, transformers' own
rewards for them (:class:`Reference`), and the matrix of largest differences they fill
(``make conformance`` writes it to docs/conformance.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.app.conftest import Server
from tests.conftest import build_chat_tokenizer, tiny_dims

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


MATRIX: dict[str, dict[str, float]] = {}  # family -> input shape -> max |served - expected|


def agrees(family: str, shape: str, served: Any, expected: Any) -> bool:
    """Record the largest difference for the matrix; true when within 1e-4 everywhere."""
    pairs = list(zip(np.atleast_1d(served), np.atleast_1d(expected), strict=True))
    worst = max(abs(float(a) - float(b)) for a, b in pairs)
    row = MATRIX.setdefault(family, {})
    row[shape] = max(row.get(shape, 0.0), worst)
    return worst <= 1e-4


def write_report(report: str) -> None:
    """The matrix as JSON at ``report`` and as a Markdown table beside it (``.md``)."""
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
        "`make conformance` (tests/app/test_conformance*.py, which assert <= 1e-4 in fp32).",
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
