"""``rankrm serve``: the scoring service on one or several exported models."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from app.config import Settings
from rankrm.commands.common import fail, setting_problem

# How the settings appear on the command line; their names, types, defaults and help are
# Settings' own (app/config.py), read by :func:`_parameters`.
TOP = ("model_dir", "models", "weights", "host", "port", "log_level", "access_log", "otel")
FLAGS = {"models": "--model", "weights": "--weight"}  # repeatable, one entry each
COMMA_SEPARATED = ("api_keys", "cors_origins")
ENV_ONLY = ("verify_checksums",)  # rarely flipped: RANKRM_VERIFY_CHECKSUMS


def _help(name: str, field: FieldInfo) -> str:
    """The field's description, with its environment variable and default."""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        shown = f"; default {'on' if default else 'off'}"
    else:
        shown = "" if default is None else f"; default {default if default != [] else 'none'}"
    if name in COMMA_SEPARATED:
        shown = "; comma-separated" + shown
    return f"{field.description} (env RANKRM_{name.upper()}{shown})"


def _parameters() -> list[inspect.Parameter]:
    """One option per setting, each None unless given, so the environment still applies."""
    parameters = []
    for name, field in Settings.model_fields.items():
        if name in ENV_ONLY:
            continue
        kind: Any = field.annotation
        if name in COMMA_SEPARATED:
            kind = str
        decls = (FLAGS[name],) if name in FLAGS else ()
        if kind is bool:
            decls = (f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}",)
        info = typer.Option(
            *decls,
            help=_help(name, field),
            rich_help_panel=None if name in TOP else "Service",
            show_default=False,
        )
        annotation = Annotated[kind | None, info]
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return parameters


def serve(**options: Any) -> None:
    """Serve rewards, preferences and rankings over HTTP with dynamic batching.

    Flags override RANKRM_* environment variables, which override the defaults.
    """
    import uvicorn
    from pydantic import ValidationError

    from app.main import create_app
    from app.server import Server
    from rankrm.manifest import ManifestError

    given = {k: v for k, v in options.items() if v is not None}
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
    Server(
        config, settings.head_limits(), settings.max_connections, application.state.shortcut
    ).run()


serve.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
