"""``rankrm serve``: the scoring service on one or several exported models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rankrm.commands.options import fail, setting_problem

SERVE = "Service"


def serve(
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Exported model folder (env RANKRM_MODEL_DIR; default models/default)."),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="NAME=DIR, repeatable: several models in one service, the first the default; "
            "requests pick one with 'model' or a weighted sum with 'weights' (env "
            "RANKRM_MODELS, comma-separated). Replaces --model-dir.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            help="NAME=WEIGHT, repeatable: requests naming no model get this weighted sum of "
            "the models' normalised rewards (env RANKRM_WEIGHTS).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Interface (env RANKRM_HOST; default 127.0.0.1; 0.0.0.0 in containers)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (env RANKRM_PORT; default 8000).")] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Texts per model call (env RANKRM_MAX_BATCH_SIZE; default 32)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens per model call, padding included (env RANKRM_MAX_BATCH_TOKENS; "
            "default 8192)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            help="Wait for batch-mates after the first text (env RANKRM_MAX_WAIT_MS; default 0.5)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    split_overhead_tokens: Annotated[
        float | None,
        typer.Option(
            help="Cost of one model call in padded tokens: batches are split into calls of "
            "similar lengths where that saves more padding (env RANKRM_SPLIT_OVERHEAD_TOKENS; "
            "default measured at start-up; 1e9 never splits)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            help="Texts waiting at most before 429 (env RANKRM_MAX_QUEUE; default 2048)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    policy_format: Annotated[
        str | None,
        typer.Option(
            help="How /get_reward reads a policy's decoded conversation: auto, none, or one "
            "of chatml, llama3, gemma, phi3, deepseek, inst, human "
            "(env RANKRM_POLICY_FORMAT; default auto)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(
            help="Browser origins allowed to call the API, comma-separated, * for any "
            "(env RANKRM_CORS_ORIGINS; default none: no CORS headers)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_queue_wait_s: Annotated[
        float | None,
        typer.Option(
            help="Model time the queue may hold before 429, at the measured speed "
            "(env RANKRM_MAX_QUEUE_WAIT_S; default a third of --request-timeout-s)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_inflight_bytes: Annotated[
        int | None,
        typer.Option(
            help="Bytes of request bodies held at once before 429; bounds memory "
            "(env RANKRM_MAX_INFLIGHT_BYTES; default 32 MiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_items: Annotated[
        int | None,
        typer.Option(
            help="Texts per request (env RANKRM_MAX_ITEMS; default 512)", rich_help_panel=SERVE
        ),
    ] = None,
    max_reward_items: Annotated[
        int | None,
        typer.Option(
            help="Samples per /get_reward request, scored max-items at a time (env "
            "RANKRM_MAX_REWARD_ITEMS; default 8192: older OpenRLHF posts 1,024 at once)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn: Annotated[
        str | None,
        typer.Option(
            help="A rule-based reward added to /get_reward's: module:function or "
            "file.py:function, f(prompt, response, label) -> float | None (env "
            "RANKRM_REWARD_FN; default none)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the reward function's reward (env RANKRM_REWARD_FN_WEIGHT; default 1)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds one reward function call may take; past it a per-sample error (env "
            "RANKRM_REWARD_FN_TIMEOUT_S; default 5)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    score_temperature: Annotated[
        float | None,
        typer.Option(
            help="/get_reward scores = sigmoid(reward / this), in (0, 1) (env "
            "RANKRM_SCORE_TEMPERATURE; default: the model's, recorded at export)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_text_chars: Annotated[
        int | None,
        typer.Option(
            help="Characters per text (env RANKRM_MAX_TEXT_CHARS; default 100000)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            help="Request body limit (env RANKRM_MAX_BODY_BYTES; default 8 MiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    request_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Per-request deadline, 504 past it (env RANKRM_REQUEST_TIMEOUT_S; default 30)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_header_bytes: Annotated[
        int | None,
        typer.Option(
            help="Request line and headers in bytes, 431 past it (env RANKRM_MAX_HEADER_BYTES; "
            "default 64 KiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_header_count: Annotated[
        int | None,
        typer.Option(
            help="Headers per request, 431 past it (env RANKRM_MAX_HEADER_COUNT; default 100)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    header_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Time a request head may take after its first byte, 408 past it (env "
            "RANKRM_HEADER_TIMEOUT_S; default 10)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="Open connections at most; new ones past it get 503 and a log line (env "
            "RANKRM_MAX_CONNECTIONS; default 2048)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="onnxruntime intra-op threads (env RANKRM_THREADS; default all cores)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    model_workers: Annotated[
        int | None,
        typer.Option(
            help="Batches in the model at once, each on its own thread, sharing the one "
            "session; cores are shared out among them (env RANKRM_MODEL_WORKERS; default 2, "
            "1 on one core)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    spin: Annotated[
        bool | None,
        typer.Option(
            "--spin/--no-spin",
            help="Let onnxruntime threads busy-wait between batches (env RANKRM_SPIN; default "
            "off: the event loop gets the CPU back).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    background_nice: Annotated[
        int | None,
        typer.Option(
            help="Nice value of the model and tokenizer threads, 0-19: the event loop "
            "(refusals, health checks) runs first when the CPU is short (env "
            "RANKRM_BACKGROUND_NICE; default 19; 0 runs them alike).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    full_gc_interval_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds between full garbage collections, run by the service instead of by "
            "Python's own rule (env RANKRM_FULL_GC_INTERVAL_S; default 30; 0 leaves Python's).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="cpu or cuda (needs onnxruntime-gpu) (env RANKRM_PROVIDER; default cpu)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    api_keys: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated accepted API keys (env RANKRM_API_KEYS; default none: open). "
            "Prefer the environment: flags show in process lists.",
            rich_help_panel=SERVE,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning or error (env RANKRM_LOG_LEVEL; default info)."),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (env RANKRM_ACCESS_LOG; default off: /metrics "
            "counts requests by endpoint and status).",
        ),
    ] = None,
    otel: Annotated[
        bool | None,
        typer.Option(
            "--otel/--no-otel",
            help="FastAPI's native OpenTelemetry spans and metrics (env RANKRM_OTEL; default off).",
        ),
    ] = None,
) -> None:
    """Serve rewards, preferences and rankings over HTTP with dynamic batching.

    Flags override RANKRM_* environment variables, which override the defaults.
    """
    import uvicorn
    from pydantic import ValidationError

    from app.config import Settings
    from app.main import create_app
    from app.server import Server
    from rankrm.manifest import ManifestError

    given = {k: v for k, v in locals().items() if k in Settings.model_fields and v is not None}
    try:
        settings = Settings(**given)
        application = create_app(settings)
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(setting_problem(e) for e in exc.errors()))
        return
    except (ManifestError, RuntimeError, OSError) as exc:
        fail(f"cannot load the model: {exc}")
        return
    except ValueError as exc:  # e.g. a --reward-fn that does not load
        fail(f"cannot start: {exc}")
        return
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    Server(config, settings.head_limits(), settings.max_connections).run()
