"""Build the application: ``create_app(settings, engine)``. Nothing happens at import."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import ops, routes
from app.batcher import Batcher
from app.collector import scheduled_full_collections
from app.config import Settings
from app.engine import Engine, OnnxEngine
from app.errors import install_error_handlers
from app.fastlane import FastLane, Shortcut
from app.intake import Admission, Intake
from app.metrics import Metrics, RequestCounter
from app.priority import allowed_cores, lowering_new_threads, worker_cores
from app.rules import RuleReward
from app.state import Served, ServiceState
from rankrm import __version__

log = logging.getLogger("rankrm.service")


class JsonBodies:
    """Read every POST body as JSON, whatever Content-Type says (curl -d sends a form type):
    all endpoints take JSON, and a wrong header should not turn into a confusing 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts requests by endpoint and status and times them (pure ASGI, no body copies)."""

    def __init__(self, app: ASGIApp, counter: RequestCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 499  # no answer started: the client left first

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        except BaseException:
            status = 500
            raise
        finally:
            self.counter.record(scope["path"], status, time.monotonic() - started)


def describe(settings: Settings, engine: Engine) -> str:
    """One line on what is served: the model, its folder, and how it runs."""
    info = engine.info()
    norm = info.get("normalization") or {}
    quantization = info.get("quantization") or {}
    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.workers)
    cores = worker_cores(settings.workers, settings.pin_model_threads, allowed_cores())
    return (
        f"serving model {engine.name!r} from {settings.model_dir.resolve()}: "
        f"max length {engine.max_length} tokens, input {info.get('template', 'pair')}, "
        f"weights {quantization.get('dtype', '?')} ({quantization.get('scheme', '?')}), "
        f"reward = (raw - {norm.get('offset', 0.0):.4g}) / {norm.get('scale', 1.0):.4g}"
        + (f", heads {', '.join(engine.heads)}" if engine.heads else "")
        + f"; {settings.provider} provider {', '.join(info.get('providers', []))}, "
        f"{settings.workers} model worker(s) x {threads} thread(s)"
        + (f" on cores {', '.join(map(str, cores))}" if cores else "")
        + (f", a lone batch on {lone} threads" if (lone := settings.lone_thread_count) else "")
    )


def load_engines(settings: Settings) -> dict[str, Engine]:
    """Every model the settings name ({name: engine}, the default first): ``models``, else
    the one in ``model_dir`` under its manifest's name."""
    if not settings.models:
        engine = OnnxEngine.from_settings(settings)
        return {engine.name: engine}
    return {
        name: OnnxEngine.from_settings(settings.model_copy(update={"model_dir": folder}))
        for name, folder in settings.model_dirs.items()
    }


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    others: dict[str, Engine] | None = None,
) -> FastAPI:
    """The service. ``engine`` defaults to the ONNX models the settings name; ``others``
    (tests) adds more models by name beside ``engine``."""
    settings = settings or Settings()
    with lowering_new_threads(settings.background_nice):  # onnxruntime's workers start here
        engines = {engine.name: engine, **(others or {})} if engine else load_engines(settings)
        default = next(iter(engines.values()))
        if settings.split_overhead_tokens is None:
            overhead = default.call_overhead_tokens()
            log.info("one model call costs about %.1f padded tokens (measured)", overhead)
            settings = settings.model_copy(update={"split_overhead_tokens": overhead})
    folders = settings.model_dirs
    for name, one in engines.items():
        log.info(
            "%s",
            describe(
                settings.model_copy(update={"model_dir": folders.get(name, settings.model_dir)}),
                one,
            ),
        )
    metrics = Metrics.create()
    served = {
        name: Served(name, one, Batcher(one, settings, metrics, name))
        for name, one in engines.items()
    }
    first = next(iter(served.values()))
    rules = None
    if settings.reward_fn:
        rules = RuleReward.load(
            settings.reward_fn,
            settings.reward_fn_weight,
            settings.reward_fn_timeout_s,
            settings.background_nice,
        )
    state = ServiceState(settings, first.engine, first.batcher, metrics, served, rules)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for one in state.models.values():
            one.batcher.start()
        # Everything built so far (modules, the model, the app) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it and stops the
        # event loop for a fraction of what it did.
        gc.collect()
        gc.freeze()
        state.ready = True
        try:
            async with scheduled_full_collections(
                settings.full_gc_interval_s, metrics.full_gc_seconds
            ):
                yield
        finally:
            state.ready = False
            for one in state.models.values():
                await one.batcher.stop()
            if state.rules is not None:
                state.rules.close()
            state.tokenizer_thread.shutdown(wait=True)

    app = FastAPI(
        title="rankrm",
        version=__version__,
        summary="Rewards, preferences and rankings from a reward model trained on rankings.",
        lifespan=lifespan,
        telemetry={"tracing": settings.otel, "metrics": settings.otel, "logs": settings.otel},
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(ops.router)
    app.add_middleware(JsonBodies)
    app.add_middleware(FastLane, state=state, routes=routes.router.routes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "x-api-key", "content-type"],
        )
    admission = Admission(state)
    app.add_middleware(Intake, admission=admission)
    every = [*app.routes, *routes.router.routes, *ops.router.routes]
    known = frozenset(path for route in every if (path := getattr(route, "path", "")))
    counter = RequestCounter(metrics, known)
    app.add_middleware(RequestMetrics, counter=counter)
    # the server hands this to each connection (app.server.Server)
    app.state.shortcut = (
        Shortcut(state, routes.router.routes, admission, counter)
        if settings.shortcut and not settings.otel
        else None
    )
    return app
