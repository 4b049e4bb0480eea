"""``manifest.json``: the contract between an exported model folder and the service.

An exported folder holds ``model.onnx``, ``tokenizer.json``, ``manifest.json`` and a
``README.md`` model card. The manifest says how to turn text into the ONNX inputs (the
encoding), how to read the output (normalisation), what the file is (backbone, pooling,
quantisation, checksums) and how good it is (evaluation figures). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankrm.chat import ChatTemplate
from rankrm.encoding import EncodingSpec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class ManifestError(ValueError):
    """A model folder that is missing, incomplete, corrupt or of an unknown version."""


@dataclass(frozen=True)
class Normalization:
    """``reward = (raw - offset) / scale``; computed on a reference set at export."""

    offset: float = 0.0
    scale: float = 1.0
    reference: str | None = None
    reference_texts: int = 0

    def __post_init__(self) -> None:
        for name in ("offset", "scale"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise ManifestError(f"normalization.{name} must be a finite number, got {value!r}")
        if self.scale <= 0:
            raise ManifestError(
                f"normalization.scale must be above 0, got {self.scale!r} (rewards would be "
                "infinite, or in reverse order)"
            )

    def apply(self, raw: Any) -> Any:
        """The normalised reward of a raw model output, or of an array of them."""
        return (raw - self.offset) / self.scale


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Manifest:
    """Everything the service needs to know about an exported model."""

    name: str
    backbone: dict[str, Any]
    max_length: int
    truncation_side: str
    inputs: list[dict[str, str]]
    output: dict[str, str]
    pad_token_id: int
    pooling: str
    normalization: Normalization
    quantization: dict[str, Any]
    files: dict[str, str]
    evaluation: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    template: str = "pair"  # "pair" (rankrm.encoding.encode) or "chat" (the chat template)
    chat_template: str | None = None  # the Jinja source, when template == "chat"
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token... for it
    append_eos: bool = False  # inputs end with the EOS token (OpenRLHF's reward models)
    # A multi-output head: the name of each output of the graph's "heads", and the weights
    # of the reward (their weighted sum). Empty for a one-output reward model.
    heads: list[str] = field(default_factory=list)
    head_weights: list[float] = field(default_factory=list)
    # /get_reward's scores are sigmoid(reward / score_temperature), in (0, 1): the spread
    # (standard deviation) of the normalised rewards on the reference texts, so a reward one
    # spread above the mean scores 0.73. None (older exports): see ``temperature``.
    score_temperature: float | None = None
    format_version: int = FORMAT_VERSION
    created_by: str = ""

    def __post_init__(self) -> None:
        """Refuse values of the wrong type or out of range, naming the field."""
        problems: list[str] = []
        if not isinstance(self.name, str):
            problems.append(f"name must be a string, got {self.name!r}")
        if not _is_count(self.max_length) or self.max_length == 0:
            problems.append(f"max_length must be a positive integer, got {self.max_length!r}")
        if self.truncation_side not in ("left", "right"):
            problems.append(
                f'truncation_side must be "left" or "right", got {self.truncation_side!r}'
            )
        if not _is_count(self.pad_token_id):
            problems.append(f"pad_token_id must be an integer >= 0, got {self.pad_token_id!r}")
        if self.template not in ("pair", "chat"):
            problems.append(f'template must be "pair" or "chat", got {self.template!r}')
        if not isinstance(self.inputs, list) or not self.inputs:
            problems.append(f"inputs must be a non-empty list, got {self.inputs!r}")
        else:
            for i, spec in enumerate(self.inputs):
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    problems.append(f"inputs[{i}] must be an object with a name, got {spec!r}")
        if not isinstance(self.files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.files.items()
        ):
            problems.append(f"files must map file names to sha256 strings, got {self.files!r}")
        if not isinstance(self.heads, list) or not all(isinstance(h, str) for h in self.heads):
            problems.append(f"heads must be a list of names, got {self.heads!r}")
        elif (
            not isinstance(self.head_weights, list)
            or len(self.head_weights) != len(self.heads)
            or not all(_is_number(w) and math.isfinite(w) for w in self.head_weights)
        ):
            problems.append(
                f"head_weights must be one finite number per head ({len(self.heads)}), "
                f"got {self.head_weights!r}"
            )
        temperature = self.score_temperature
        if temperature is not None and not (
            _is_number(temperature) and math.isfinite(temperature) and temperature > 0
        ):
            problems.append(
                f"score_temperature must be a finite number above 0, got {temperature!r}"
            )
        if problems:
            raise ManifestError("; ".join(problems))

    @property
    def encoding(self) -> EncodingSpec:
        """The tokenisation settings the model was trained with."""
        return EncodingSpec(self.max_length, self.truncation_side)  # type: ignore[arg-type]

    @property
    def chat(self) -> ChatTemplate | None:
        """The chat template the model reads conversations with, if it has one."""
        if self.template != "chat":
            return None
        if not self.chat_template:
            raise ManifestError('template is "chat" but the manifest holds no chat_template')
        return ChatTemplate(self.chat_template, self.special_tokens, append_eos=self.append_eos)

    @property
    def temperature(self) -> float:
        """The score temperature: recorded at export, else the spread of the exported
        model's rewards on its dev lists (older exports recorded that), else 1."""
        if self.score_temperature is not None:
            return self.score_temperature
        dev = self.evaluation.get("dev", {}) if isinstance(self.evaluation, dict) else {}
        spread: Any = (dev.get("exported") or {}).get("reward_std")
        if _is_number(spread) and math.isfinite(spread) and spread > 0:
            return float(spread)
        return 1.0

    @property
    def input_names(self) -> list[str]:
        """ONNX input names, in order."""
        return [spec["name"] for spec in self.inputs]

    def to_json(self) -> str:
        """Pretty JSON, keys in a stable order."""
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from parsed JSON, refusing unknown versions and missing fields."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"manifest format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            norm = Normalization(**data.pop("normalization"))
            return cls(normalization=norm, **data)
        except (TypeError, KeyError) as exc:
            raise ManifestError(f"manifest is incomplete or has unknown fields: {exc}") from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(folder: Path | str, verify: bool = True) -> Manifest:
    """Read and check ``folder/manifest.json``; with ``verify``, check every file's sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ManifestError(f"{folder}: model folder not found")
    if not path.is_file():
        raise ManifestError(f"{path}: not found (is {folder} an exported model folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    try:
        manifest = Manifest.from_dict(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    for name in (MODEL_FILE, TOKENIZER_FILE):
        if name not in manifest.files:
            raise ManifestError(f"{path}: no checksum for {name}")
    for name, expected in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise ManifestError(f"{file}: missing (listed in the manifest)")
        if verify and sha256_file(file) != expected:
            raise ManifestError(f"{file}: sha256 does not match the manifest (corrupt or replaced)")
    return manifest
