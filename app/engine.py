"""The model behind the service: tokenise, run a padded batch, normalise.

:class:`Engine` is the seam the batcher and the routes see; :class:`OnnxEngine` is the
production one (onnxruntime), tests may hand in another.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from app.config import Settings
from rankrm.chat import ChatTemplateError
from rankrm.encoding import Batch, Tokens
from rankrm.manifest import MODEL_FILE
from rankrm.runtime import OnnxRewardModel, make_session

NEVER_SPLIT = 1e9  # a call overhead no padding saving can beat
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


PromptInput = str | list[dict[str, str]] | None
"""A prompt as text, or as chat turns (role/content, roles already normalised)."""


class InputError(ValueError):
    """Input ``index`` of an ``encode`` call cannot be turned into tokens (e.g. the model's
    chat template refused the conversation)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Engine(Protocol):
    """What the service needs from a model."""

    name: str
    max_length: int
    heads: list[str]  # a multi-output head's output names; empty for a one-output model
    score_temperature: float  # /get_reward's scores: sigmoid(reward / score_temperature)

    def encode(
        self, prompts: Sequence[PromptInput], responses: Sequence[str], *, parallel: bool = True
    ) -> list[Tokens]:
        """Token ids of each input, truncated to ``max_length`` (``parallel=False``: on the
        calling thread only, as the event loop needs). A prompt given as chat turns makes
        the input a conversation ending with the response as the assistant's answer."""
        ...

    def run(self, encodings: Sequence[Tokens], *, lone: bool = False) -> np.ndarray:
        """Raw rewards ``(N,)`` of one batch (padded to its longest input); for a model with
        a multi-output head (``heads``), ``(N, 1 + H)``: the reward, then each output.
        ``lone``: no other batch is in the model, so this one may take every core."""
        ...

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw rewards -> normalised rewards."""
        ...

    def info(self) -> dict[str, Any]:
        """What ``GET /info`` shows about the model."""
        ...

    def call_overhead_tokens(self) -> float:
        """What one model call costs beyond its tokens, in padded tokens (see grouping)."""
        ...


class OnnxEngine:
    """An exported model folder on onnxruntime."""

    def __init__(self, model: OnnxRewardModel, lone: OnnxRewardModel | None = None) -> None:
        if model.manifest is None:
            raise ValueError("the engine needs a model loaded from an exported folder")
        self.model = model
        self.lone = lone  # the same file on every core, for a batch alone in the model
        self.manifest = model.manifest
        self.name = model.manifest.name
        self.max_length = model.manifest.max_length
        self.heads = list(model.manifest.heads)
        self.score_temperature = model.manifest.temperature

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
            threads=settings.threads or _threads_per_worker(settings.workers),
            providers=[provider],
            verify=settings.verify_checksums,
            spin=settings.spin,
        )
        model.first_batch()
        lone = None
        if settings.lone_thread_count:  # the same model and tokenizer, a second session
            session = make_session(
                settings.model_dir / MODEL_FILE,
                settings.lone_thread_count,
                [provider],
                spin=True,  # it runs only when no other batch needs the cores
            )
            lone = replace(model, session=session)
            lone.first_batch()
        return cls(model, lone)

    def encode(
        self, prompts: Sequence[PromptInput], responses: Sequence[str], *, parallel: bool = True
    ) -> list[Tokens]:
        chats = [i for i, prompt in enumerate(prompts) if isinstance(prompt, list)]
        if not chats:
            texts: list[str | None] = [p if isinstance(p, str) else None for p in prompts]
            return self.model.encode(texts, responses, parallel=parallel)
        tokens: list[Tokens | None] = [None] * len(prompts)
        chat_set = set(chats)
        pairs = [i for i in range(len(prompts)) if i not in chat_set]
        if pairs:
            paired = self.model.encode(
                [prompts[i] for i in pairs],  # type: ignore[misc]
                [responses[i] for i in pairs],
                parallel=parallel,
            )
            for i, one in zip(pairs, paired, strict=True):
                tokens[i] = one
        for i in chats:
            turns = [*prompts[i], {"role": "assistant", "content": responses[i]}]  # type: ignore[misc]
            try:
                (tokens[i],) = self.model.encode_conversations([turns])
            except ChatTemplateError as exc:
                raise InputError(i, str(exc)) from exc
        return [t for t in tokens if t is not None]

    def run(self, encodings: Sequence[Tokens], *, lone: bool = False) -> np.ndarray:
        model = self.lone if lone and self.lone is not None else self.model
        return model.run_encodings(encodings, with_heads=True)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.model.normalize(raw)

    def call_overhead_tokens(self) -> float:
        """Measured now on dummy batches (which also warms the session up): one short text
        against ``8 x T`` tokens, read as ``a + b * tokens``; the answer is ``2 a / b``.

        Twice the intercept, because in the service a call also waits for the GIL and wakes
        onnxruntime's threads, which back-to-back runs here do not see (A/B runs in
        docs/benchmarks.md: the plain intercept split too eagerly and lost on short texts)."""
        width = min(64, self.max_length)

        def best_of(runs: int, n: int, t: int) -> float:
            ones = np.ones((n, t), dtype=np.int64)
            batch = Batch(ones * self.model.pad_token_id, ones, ones * 0)
            return min(_timed(lambda: self.model.run(batch)) for _ in range(runs))

        best_of(2, 8, width)  # warm-up
        small, large = best_of(9, 1, 8), best_of(5, 8, width)
        per_token = (large - small) / (8 * width - 8)
        if per_token <= 0:  # tokens look free: never split
            return NEVER_SPLIT
        return 2 * max(0.0, (small - 8 * per_token) / per_token)

    def info(self) -> dict[str, Any]:
        manifest = self.manifest.__dict__.copy()
        manifest["normalization"] = self.manifest.normalization.__dict__
        manifest["providers"] = self.model.session.get_providers()
        return manifest


def _threads_per_worker(workers: int) -> int | None:
    """The cores shared out among ``workers`` concurrent batches (None: onnxruntime's own
    choice, all cores, for one)."""
    if workers == 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
