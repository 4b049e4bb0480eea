"""What the service's parts share, built once by ``create_app``: the loaded models and
their batchers, settings, metrics, the tokenisation budget, and whether it is ready."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.batcher import Batcher
from app.config import Settings
from app.engine import Engine
from app.errors import ErrorKind, ServiceError
from app.metrics import Metrics
from app.priority import background_executor
from app.rules import RuleReward


@dataclass
class Served:
    """One loaded model and the batcher that owns it."""

    name: str
    engine: Engine
    batcher: Batcher


@dataclass
class ServiceState:
    """What the routes share: built once by ``create_app``. ``engine`` and ``batcher`` are
    the default model's; ``models`` holds every model by name (the default first)."""

    settings: Settings
    engine: Engine
    batcher: Batcher
    metrics: Metrics
    models: dict[str, Served] = field(default_factory=dict)
    rules: RuleReward | None = None  # the user's rule-based reward (--reward-fn)
    ready: bool = False
    tokenizing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    tokenizer_backlog_chars: int = 0  # characters admitted for tokenisation, not yet done
    s_per_char: float = 0.0  # measured tokenisation speed (moving average)
    # large requests' slices, one at a time, below the event loop's priority
    tokenizer_thread: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        nice = self.settings.background_nice
        self.tokenizer_thread = background_executor(nice, 1, "rankrm-tokenize")
        if not self.models:
            self.models = {self.engine.name: Served(self.engine.name, self.engine, self.batcher)}

    def model(self, name: str | None, where: str = "model") -> Served:
        """The model a request names (None: the default); 422 naming the loaded ones."""
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise ServiceError(
                ErrorKind.INVALID_REQUEST,
                f"{where}: no model named {name!r}; loaded: {', '.join(self.models)}",
            )
        return self.models[name]

    @property
    def running(self) -> bool:
        """Whether every model's batch workers are alive."""
        return all(served.batcher.running for served in self.models.values())

    def require_ready(self) -> None:
        """503 unless the models are loaded and their workers run: the one readiness rule
        (intake, the scoring routes' dependency and ``/ready`` all ask here)."""
        if not (self.ready and self.running):
            raise ServiceError(ErrorKind.NOT_READY, "the model is not loaded yet, or shutting down")
