"""Data files the training tests write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, records: list[Any]) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def rated_tsv(tmp_path: Path) -> Path:
    lines = [f"{label}\ttext {label} number {i}" for label in range(5) for i in range(4)]
    return write(tmp_path / "rated.tsv", "\n".join(lines) + "\n")
