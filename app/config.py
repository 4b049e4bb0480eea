"""Service settings: environment variables prefixed ``RANKRM_`` and ``rankrm serve`` flags."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.connection import HeadLimits


class Settings(BaseSettings):
    """Everything the service can be told. Defaults serve ``models/default`` on :8000."""

    model_config = SettingsConfigDict(env_prefix="RANKRM_", extra="ignore")

    # model
    model_dir: Path = Field(Path("models/default"), description="Exported model folder.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several models in one service: NAME=DIR entries (comma-separated in "
        "the environment; --model repeatable), the first the default; requests pick one by "
        "name or ask for a weighted sum. Replaces model_dir when given.",
    )
    weights: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="NAME=WEIGHT entries: answer requests that name no model with this "
        "weighted sum of the models' normalised rewards (default: the first model alone).",
    )
    provider: Literal["cpu", "cuda"] = Field(
        "cpu", description="onnxruntime execution provider (cuda needs onnxruntime-gpu)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime intra-op threads per batch (default: the cores, shared out "
        "among model_workers).",
    )
    model_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Batches in the model at once, each run by its own thread on the one "
        "onnxruntime session (shared, not copied): with 2, one batch forms while the other "
        "runs, and each gets half the cores. Default: 2 (1 on a one-core machine); "
        "measured in docs/benchmarks.md.",
    )
    pin_model_threads: bool | None = Field(
        None,
        description="Each model worker thread on a core of its own (Linux). Default: on when "
        "the process may use exactly as many cores as there are model_workers (a machine or "
        "a container given its own cores), where it keeps the scheduler from queueing both "
        "model threads on one core while the other sits idle (+7 % texts/s on short and "
        "mixed texts on 2 cores, docs/benchmarks.md); off where the cores are shared with "
        "other processes.",
    )
    lone_threads: int | None = Field(
        None,
        ge=0,
        description="onnxruntime intra-op threads for a lone batch (no other batch in the "
        "model, none waiting): it runs on a second session of the same file, threads "
        "spinning, so a request on an idle service gets every core instead of its worker's "
        "share (a short text: 2.9 ms against 4.1 ms on one thread, docs/benchmarks.md). "
        "Default: the cores, where model_workers share them out on CPU; 0: off.",
    )
    verify_checksums: bool = Field(True, description="Check the model files' sha256 at start.")
    spin: bool = Field(
        False,
        description="Let onnxruntime threads busy-wait between batches (off: the "
        "event loop gets the CPU back).",
    )
    background_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Nice value of the model and tokenizer threads (Linux): the event loop "
        "(refusals, health checks, small requests) runs first when the CPU is short; 0 "
        "runs them alike. See app/priority.py.",
    )
    full_gc_interval_s: float = Field(
        30.0,
        ge=0,
        description="Seconds between full garbage collections, run by the service instead "
        "of by Python's own rule (which ran them every few seconds under overload, each "
        "stopping the event loop for 40-85 ms); 0 leaves Python's rule. See app/collector.py.",
    )
    reward_fn: str | None = Field(
        None,
        description="A rule-based reward added to /get_reward's: module:function or "
        "file.py:function, called as f(prompt, response, label) -> float | None off the "
        "event loop (app/rules.py).",
    )
    reward_fn_weight: float = Field(1.0, description="Weight of reward_fn's reward in the sum.")
    reward_fn_timeout_s: float = Field(
        5.0, gt=0, description="Seconds one reward_fn call may take; past it, a per-sample error."
    )
    score_temperature: float | None = Field(
        None,
        gt=0,
        description="/get_reward's scores are sigmoid(reward / score_temperature), in (0, 1) "
        "as OpenRLHF's dynamic filtering expects. Default: the model's, recorded at export "
        "(the spread of its normalised rewards on the reference texts).",
    )
    policy_format: Literal[
        "auto", "none", "chatml", "llama3", "gemma", "phi3", "deepseek", "inst", "human"
    ] = Field(
        "auto",
        description="How /get_reward reads a policy's decoded conversation (rankrm.formats): "
        "auto recognises the common chat formats, a name forces one, none scores the "
        "query as it stands.",
    )
    # network
    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    # batching
    max_batch_size: int = Field(32, ge=1, le=4096, description="Texts per model call at most.")
    max_batch_tokens: int = Field(
        1024,
        ge=16,
        description="Tokens per model call at most, padding included. On CPU, calls of about "
        "1,000 tokens are the fastest per token (larger ones spill out of the caches: 28 % "
        "slower at 8,192, docs/benchmarks.md); on a GPU raise it (e.g. 16384).",
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Longest wait for batch-mates after the first text. Under load batches "
        "fill while the model runs, so 0 (take what is waiting) loses nothing there and adds "
        "nothing to a lone request (0.5 ms cost that, docs/benchmarks.md).",
    )
    split_overhead_tokens: float | None = Field(
        None,
        ge=0,
        description="What one model call costs, in padded tokens: a batch is split into "
        "calls of similar lengths where the padding saved outweighs the extra calls. "
        "Default: measured at start-up; a huge value never splits.",
    )
    max_call_attention: float | None = Field(
        None,
        gt=0,
        description="Texts x tokens squared per model call at most (the size of its "
        "attention scores): larger calls of a batch are cut into equal parts. On CPU, calls "
        "of 8 texts of 128 tokens ran 4-8 % slower than calls of 4 (their attention no longer "
        "fits the caches), while short texts are unaffected (docs/benchmarks.md). Default: "
        "65536 (4 texts of 128 tokens, 64 of 32) on CPU, no limit on a GPU.",
    )
    max_queue: int = Field(
        2048, ge=1, description="Texts waiting at most; past it requests get 429 at once."
    )
    max_queue_wait_s: float | None = Field(
        None,
        gt=0,
        description="Model time the queue may hold, at the measured speed; past it requests "
        "get 429 at once, so what is admitted is answered within the deadline. "
        "Default: a third of request_timeout_s.",
    )
    max_inflight_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Bytes of request bodies held at once (read, parsed, queued); past it "
        "requests get 429 at once. Bounds memory: see docs/hardening.md.",
    )
    # limits
    max_items: int = Field(512, ge=1, description="Texts (or pairs, candidates) per request.")
    max_text_chars: int = Field(100_000, ge=1, description="Characters per prompt or text.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Request body size limit.")
    max_reward_items: int = Field(
        8192,
        ge=1,
        description="Samples in one /get_reward request (older OpenRLHF clients post a whole "
        "rollout batch, 1,024 by default); scored max_items at a time, so the queue and "
        "memory stay bounded.",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Per-request deadline (504 past it).")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Request line and headers, in bytes (431 past it)."
    )
    max_header_count: int = Field(100, ge=8, description="Headers per request (431 past it).")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a request head may take after its first byte (408)."
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Open connections at most; past it new ones get 503 and are closed, "
        "with a log line (the open-file limit is raised to fit where allowed).",
    )
    # security
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted keys (comma-separated in RANKRM_API_KEYS); empty: no auth.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (comma-separated in "
        "RANKRM_CORS_ORIGINS; * for any); empty: no CORS headers at all.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error."
    )
    access_log: bool = Field(
        False, description="One log line per request (off: /metrics counts them)."
    )
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans and metrics (off: the check costs "
        "about 5 % of the event loop per request; Prometheus /metrics is always on).",
    )
    shortcut: bool = Field(
        True,
        description="Answer a well-formed scoring request from the HTTP protocol, without "
        "the ASGI layers, when it needs none of them (same answers, admission and metrics; "
        "off with otel or access_log): a quarter to a third less of the event loop's time "
        "per request (app/fastlane.py, docs/benchmarks.md).",
    )

    @property
    def workers(self) -> int:
        """``model_workers``, or its default for this machine."""
        if self.model_workers is not None:
            return self.model_workers
        return 2 if (os.cpu_count() or 1) >= 2 else 1

    @property
    def call_attention_limit(self) -> float:
        """``max_call_attention``, or its default: 4 x 128² on CPU, none on a GPU."""
        if self.max_call_attention is not None:
            return self.max_call_attention
        return 4 * 128**2 if self.provider == "cpu" else math.inf

    @property
    def lone_thread_count(self) -> int:
        """``lone_threads``, or its default: all cores where the workers share them out on
        CPU (0: no lone-batch session)."""
        if self.lone_threads is not None:
            return self.lone_threads
        cores = os.cpu_count() or 1
        shared = self.workers > 1 and self.threads is None and self.provider == "cpu"
        return cores if shared and cores > 1 else 0

    def head_limits(self) -> HeadLimits:
        """What a connection may send before its body (``app.connection``)."""
        return HeadLimits(self.max_header_bytes, self.max_header_count, self.header_timeout_s)

    @property
    def queue_wait_limit_s(self) -> float:
        """``max_queue_wait_s``, or its default: a third of the request deadline."""
        return self.max_queue_wait_s or self.request_timeout_s / 3

    @field_validator("models", "weights", mode="before")
    @classmethod
    def _split_entries(cls, value: object) -> object:
        if isinstance(value, str):
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value

    @property
    def model_dirs(self) -> dict[str, Path]:
        """``models`` as {name: folder} (empty: the one model in ``model_dir``)."""
        return {name: Path(folder) for name, folder in _pairs(self.models, "models", "DIR")}

    @property
    def weight_map(self) -> dict[str, float]:
        """``weights`` as {model name: weight}."""
        return {name: float(w) for name, w in _pairs(self.weights, "weights", "WEIGHT")}

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.model_dirs  # noqa: B018 (parses: NAME=DIR entries, or a clear error)
        unknown = sorted(set(self.weight_map) - set(self.model_dirs))
        if unknown and self.models:
            raise ValueError(
                f"weights name {', '.join(unknown)}, not among the models "
                f"({', '.join(self.model_dirs)}); name loaded models"
            )
        short = [i for i, key in enumerate(self.api_keys) if len(key.get_secret_value()) < 8]
        if short:
            lengths = ", ".join(
                f"key {i + 1}: {len(self.api_keys[i].get_secret_value())}" for i in short
            )
            raise ValueError(
                f"API keys must be at least 8 characters long ({lengths}); use longer keys, "
                "e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        if self.max_batch_tokens < self.max_batch_size:
            raise ValueError(
                f"max_batch_tokens ({self.max_batch_tokens}) must be at least max_batch_size "
                f"({self.max_batch_size}); raise max_batch_tokens to {self.max_batch_size} or "
                "more, or lower max_batch_size"
            )
        if self.max_queue < self.max_items:
            raise ValueError(
                f"max_queue ({self.max_queue}) must hold at least one full request of "
                f"max_items ({self.max_items}) texts; set max_queue to {self.max_items} or "
                "more (--max-queue), or lower max_items"
            )
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must hold at least one "
                f"request body of max_body_bytes ({self.max_body_bytes}); raise it or lower "
                "max_body_bytes"
            )
        if self.max_queue_wait_s is not None and self.max_queue_wait_s >= self.request_timeout_s:
            raise ValueError(
                f"max_queue_wait_s ({self.max_queue_wait_s:g}) must be below "
                f"request_timeout_s ({self.request_timeout_s:g}), or admitted requests time out"
            )
        return self


def _pairs(entries: list[str], setting: str, what: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries split, refusing malformed and repeated names."""
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{setting}[{i}]: {entry!r} is not NAME={what}")
        if what == "WEIGHT":
            try:
                float(value)
            except ValueError:
                raise ValueError(f"{setting}[{i}]: {value!r} is not a number") from None
        if any(name.strip() == seen for seen, _ in pairs):
            raise ValueError(f"{setting}[{i}]: the name {name.strip()!r} is given twice")
        pairs.append((name.strip(), value.strip()))
    return pairs
