"""``rankrm annotate``: serve the annotation page, load tasks, export rankings.

Only typer is imported here; the database and web stack load inside the commands.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rankrm.commands.common import fail

if TYPE_CHECKING:
    from rankrm.annotate.store import Store

app = typer.Typer(
    name="annotate",
    help="People rank K responses in a browser; rankings come out ready for rankrm train.",
    no_args_is_help=True,
)


class Consensus(StrEnum):
    """How several annotators' rankings of one task become one list (or not)."""

    none = "none"
    ranked_pairs = "ranked-pairs"
    borda = "borda"


class Method(StrEnum):
    """The consensus the dashboard measures each annotator and the model against."""

    ranked_pairs = "ranked-pairs"
    borda = "borda"


DB_HELP = (
    "Database: a SQLite file path, or a SQLAlchemy URL such as "
    "postgresql+psycopg://user:password@host/db (env RANKRM_ANNOTATE_DB)."
)
Db = Annotated[str, typer.Option(help=DB_HELP, envvar="RANKRM_ANNOTATE_DB")]


def _open(db: str, overlap: int = 1, timeout: float = 1800.0) -> Store:
    from sqlalchemy.exc import SQLAlchemyError

    from rankrm.annotate.database import make_engine, migrate
    from rankrm.annotate.store import Store

    try:
        engine = make_engine(db)
        migrate(engine)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        fail(f"cannot open the database {db!r}: {str(exc).splitlines()[0]}")
    return Store(engine, overlap=overlap, timeout=timeout)


def _load(store: Store, files: list[Path]) -> None:
    from rankrm.annotate.tasks import TaskFileError, read_tasks

    for path in files:
        try:
            report = store.load(read_tasks(path), source=path.name)
        except TaskFileError as exc:
            fail(str(exc))
        except ValueError as exc:
            fail(f"{path}: {exc}")
        typer.echo(f"{path}: {report.added} tasks added, {report.unchanged} already there")


def _tokens(path: Path) -> dict[str, str]:
    """``--auth`` file: one ``NAME TOKEN`` pair a line (# comments)."""
    tokens: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--auth {path}: cannot read: {exc}")
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            fail(f"{path}:{number}: expected 'NAME TOKEN' with a token of 16+ characters")
        if parts[1] in tokens:
            fail(f"{path}:{number}: this token is already given to {tokens[parts[1]]!r}")
        tokens[parts[1]] = parts[0]
    if not tokens:
        fail(f"--auth {path}: no annotators in the file")
    return tokens


@app.command()
def load(
    tasks: Annotated[list[Path], typer.Argument(help="Task files (JSON Lines).")],
    db: Db = "annotations.db",
) -> None:
    """Load tasks into the database (again is harmless: known tasks are kept as they are)."""
    _load(_open(db), tasks)


@app.command()
def serve(
    tasks: Annotated[
        list[Path] | None, typer.Argument(help="Task files to load first (JSON Lines).")
    ] = None,
    db: Db = "annotations.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8100,
    overlap: Annotated[int, typer.Option(min=1, help="Annotators per task.")] = 1,
    guidelines: Annotated[
        Path | None, typer.Option(help="Text file shown to annotators as the guidelines.")
    ] = None,
    auth: Annotated[
        Path | None,
        typer.Option(help="File of 'NAME TOKEN' lines: annotators log in with their token."),
    ] = None,
    assignment_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds before an abandoned task goes back to the queue.")
    ] = 1800.0,
    reward_url: Annotated[
        str | None,
        typer.Option(help="A running rankrm serve: tasks it is least sure about come first."),
    ] = None,
    consensus: Annotated[
        Method, typer.Option(help="Consensus the dashboard measures agreement against.")
    ] = Method.ranked_pairs,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark the login cookie Secure (serving behind HTTPS).")
    ] = False,
) -> None:
    """Serve the annotation page (http://HOST:PORT/) and its dashboard (/dashboard)."""
    import uvicorn

    from rankrm.annotate.web import AppSettings, create_app

    text = ""
    if guidelines is not None:
        try:
            text = guidelines.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--guidelines {guidelines}: cannot read: {exc}")
    settings = AppSettings(
        guidelines=text,
        tokens=_tokens(auth) if auth else {},
        consensus=consensus.value,
        secure_cookie=secure_cookies,
    )
    store = _open(db, overlap, assignment_timeout)
    if tasks:
        _load(store, tasks)
    if reward_url:
        _score(store, reward_url)
    typer.echo(f"annotation page on http://{host}:{port}/ (dashboard: /dashboard)")
    uvicorn.run(create_app(store, settings), host=host, port=port, log_level="warning")


def _score(store: Store, reward_url: str) -> None:
    import logging

    import httpx

    from rankrm.annotate.model_loop import score_tasks

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from rankrm.client import RewardServiceError

    try:
        scored = score_tasks(store, reward_url)
    except (RewardServiceError, httpx.HTTPError) as exc:
        fail(f"--reward-url {reward_url}: cannot score the tasks: {exc}")
    typer.echo(f"{scored} tasks scored by the model at {reward_url}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="JSONL file to write (replaced atomically).")],
    db: Db = "annotations.db",
    consensus: Annotated[
        Consensus,
        typer.Option(help="none: one list per annotator; else one consensus list per task."),
    ] = Consensus.none,
    min_rankings: Annotated[
        int, typer.Option(min=1, help="Leave out tasks with fewer rankings than this.")
    ] = 1,
) -> None:
    """Write the rankings as rankrm's JSONL ranking format (trains with rankrm train)."""
    from rankrm.annotate.export import export as run

    store = _open(db)
    try:
        report = run(store, out, consensus.value, min_rankings)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    typer.echo(json.dumps({"out": str(out), **report.__dict__}))
