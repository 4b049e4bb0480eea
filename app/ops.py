"""Operational endpoints: liveness, readiness, model info, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.security import require_api_key
from app.state import ServiceState

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> dict[str, Any]:
    """Readiness: model loaded and batch worker running (503 otherwise)."""
    state: ServiceState = request.app.state.service
    state.require_ready()
    return {"status": "ready", "model": state.engine.name, "queued": state.batcher.queued}


@router.get("/info", dependencies=[Depends(require_api_key)])
async def info(request: Request) -> dict[str, Any]:
    """The model's manifest and the service's limits."""
    state: ServiceState = request.app.state.service
    s = state.settings
    limits = {
        "max_items": s.max_items,
        "max_text_chars": s.max_text_chars,
        "max_body_bytes": s.max_body_bytes,
        "request_timeout_s": s.request_timeout_s,
        "max_batch_size": s.max_batch_size,
        "max_batch_tokens": s.max_batch_tokens,
        "max_wait_ms": s.max_wait_ms,
        "model_workers": s.workers,
        "split_overhead_tokens": s.split_overhead_tokens,
        "max_queue": s.max_queue,
        "max_queue_wait_s": s.queue_wait_limit_s,
        "max_inflight_bytes": s.max_inflight_bytes,
        "max_length_tokens": state.engine.max_length,
    }
    models = {name: one.engine.info() for name, one in state.models.items()}
    return {
        "model": state.engine.info(),
        "models": models,
        "weights": s.weight_map,
        "limits": limits,
        "auth": bool(s.api_keys),
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "OK"}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    state: ServiceState = request.app.state.service
    for one in state.models.values():
        state.metrics.queue_size.labels(one.batcher.model).set(one.batcher.queued)
        state.metrics.queue_wait_estimate.labels(one.batcher.model).set(
            one.batcher.expected_wait_s()
        )
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
