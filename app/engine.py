"""The model behind the service: tokenise, run a padded batch, normalise.

:class:`Engine` is the seam the batcher and the routes see; :class:`OnnxEngine` is the
production one (onnxruntime), tests may hand in another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from tokenizers import Encoding

from app.config import Settings
from rankrm.runtime import OnnxRewardModel

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class Engine(Protocol):
    """What the service needs from a model."""

    name: str
    max_length: int

    def encode(self, prompts: Sequence[str | None], responses: Sequence[str]) -> list[Encoding]:
        """Token ids of each input, truncated to ``max_length``."""
        ...

    def run(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """Raw rewards ``(N,)`` of one batch (padded to its longest input)."""
        ...

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw rewards -> normalised rewards."""
        ...

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` shows about the model."""
        ...


class OnnxEngine:
    """An exported model folder on onnxruntime."""

    def __init__(self, model: OnnxRewardModel) -> None:
        if model.manifest is None:
            raise ValueError("the engine needs a model loaded from an exported folder")
        self.model = model
        self.manifest = model.manifest
        self.name = model.manifest.name
        self.max_length = model.manifest.max_length

    @classmethod
    def from_settings(cls, settings: Settings) -> OnnxEngine:
        """Load ``settings.model_dir`` with the configured provider and threads."""
        provider = PROVIDERS[settings.provider]
        if provider != "CPUExecutionProvider":
            import onnxruntime as ort

            if provider not in ort.get_available_providers():
                raise RuntimeError(
                    f"{provider} is not available: install onnxruntime-gpu, or use provider=cpu"
                )
        model = OnnxRewardModel.load(
            settings.model_dir,
            threads=settings.threads,
            providers=[provider],
            verify=settings.verify_checksums,
            spin=settings.spin,
        )
        return cls(model)

    def encode(self, prompts: Sequence[str | None], responses: Sequence[str]) -> list[Encoding]:
        return self.model.encode(prompts, responses)

    def run(self, encodings: Sequence[Encoding]) -> np.ndarray:
        return self.model.run_encodings(encodings)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.model.normalize(raw)

    def info(self) -> dict[str, Any]:
        manifest = self.manifest.__dict__.copy()
        manifest["normalization"] = self.manifest.normalization.__dict__
        manifest["providers"] = self.model.session.get_providers()
        return manifest
