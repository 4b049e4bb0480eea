"""The annotation app: one page for annotators (``/``), its JSON API (``/api/...``) and the
dashboard (``/dashboard``). Its own FastAPI app, apart from the scoring service; request
bodies over 1 MiB are refused (413) before they are held.

Who is asking comes from a cookie set by ``POST /api/login``: the annotator's name, or with
``--auth`` their token (checked against the token file in constant time). Every error body is
``{"error": <message>, "error_type": <code>}``.
"""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rankrm.annotate import stats
from rankrm.annotate.replies import AnnotateError, Shown
from rankrm.annotate.store import Store

COOKIE = "rankrm_annotator"
MAX_BODY_BYTES = 1 << 20  # a submission is a few hundred bytes; nothing here needs more
_HERE = Path(__file__).parent


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, by its Content-Length at once
    or, sent in chunks, as soon as it passes the limit; nothing larger is ever held."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received, refused = 0, False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit and not refused:
                refused = True  # answered here; whatever the app makes of it is dropped
                await self._refuse(scope, receive, send)
                raise _TooLarge
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, unless_refused)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over {self.limit} bytes"
        await _error(413, "too_large", message)(scope, receive, send)


@dataclass
class AppSettings:
    guidelines: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # token -> annotator name (--auth)
    consensus: str = "ranked-pairs"  # for the dashboard's agreement with the others
    secure_cookie: bool = False


class Login(BaseModel):
    name: str | None = Field(None, description="Your name (without --auth).")
    token: str | None = Field(None, description="Your token (with --auth).")


class Submission(BaseModel):
    assignment: str
    order: Any = Field(
        description="Groups of response indices, best first; responses in a group are tied, "
        "e.g. [[2], [0, 3], [1]]."
    )


class CannotRank(BaseModel):
    assignment: str
    reason: str


class Skip(BaseModel):
    assignment: str


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": code}, status_code=status)


def _task_body(shown: Shown | None, store: Store, annotator: int) -> dict[str, Any]:
    return {
        "task": None if shown is None else asdict(shown),
        "progress": asdict(store.progress(annotator)),
        "annotator": store.name_of(annotator),
    }


def _who(settings: AppSettings, name: str | None, token: str | None) -> str:
    """The annotator's name from a login or a cookie; AnnotateError(401) if none."""
    if settings.tokens:
        if token:
            for known, owner in settings.tokens.items():  # every token compared, in full
                if hmac.compare_digest(known.encode(), token.encode()):
                    return owner
        raise AnnotateError(401, "unauthorized", "a valid annotator token is required")
    if not name or not name.strip():
        raise AnnotateError(401, "unauthorized", "no annotator: log in with your name first")
    return name


def _annotator(request: Request) -> int:
    """The id of the annotator the request's cookie names (401 when there is none)."""
    store: Store = request.app.state.store
    settings: AppSettings = request.app.state.settings
    value = request.cookies.get(COOKIE)
    if settings.tokens:
        return store.annotator(_who(settings, None, value))
    return store.annotator(_who(settings, value, None))


Me = Annotated[int, Depends(_annotator)]


def create_app(store: Store, settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    app = FastAPI(title="rankrm annotate", docs_url="/api/docs", redoc_url=None)
    app.state.store, app.state.settings = store, settings
    app.add_middleware(BodyLimit)
    templates = Environment(
        loader=PackageLoader("rankrm.annotate", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")

    @app.exception_handler(AnnotateError)
    async def _annotate_error(_: Request, exc: AnnotateError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(_HERE / "static" / "annotate.html")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        """What the page needs before login: whether a token is asked, the guidelines."""
        return {"auth": bool(settings.tokens), "guidelines": settings.guidelines}

    @app.post("/api/login")
    def login(body: Login, response: Response) -> dict[str, Any]:
        name = _who(settings, body.name, body.token)
        annotator_id = store.annotator(name)
        value = body.token if settings.tokens else name.strip()
        response.set_cookie(
            COOKIE, value or "", httponly=True, samesite="strict", secure=settings.secure_cookie
        )
        return {"name": name.strip(), "progress": asdict(store.progress(annotator_id))}

    @app.post("/api/logout")
    def logout(response: Response) -> dict[str, bool]:
        response.delete_cookie(COOKIE)
        return {"ok": True}

    @app.get("/api/next")
    def next_task(me: Me) -> dict[str, Any]:
        """The task you hold, or a new one (``task`` is null when none is left for you)."""
        return _task_body(store.next(me), store, me)

    @app.post("/api/submit")
    def submit(body: Submission, me: Me) -> dict[str, Any]:
        store.submit(me, body.assignment, body.order)
        return {"progress": asdict(store.progress(me))}

    @app.post("/api/cannot-rank")
    def cannot_rank(body: CannotRank, me: Me) -> dict[str, Any]:
        store.cannot_rank(me, body.assignment, body.reason)
        return {"progress": asdict(store.progress(me))}

    @app.post("/api/skip")
    def skip(body: Skip, me: Me) -> dict[str, Any]:
        store.skip(me, body.assignment)
        return {"progress": asdict(store.progress(me))}

    @app.post("/api/undo")
    def undo(me: Me) -> dict[str, Any]:
        """Reopen your last finished task, with your answer to start from."""
        return _task_body(store.undo(me), store, me)

    @app.get("/api/stats")
    def stats_json(_: Me) -> dict[str, Any]:
        return asdict(stats.collect(store, settings.consensus))

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(_: Me) -> str:
        data = stats.collect(store, settings.consensus)
        return templates.get_template("dashboard.html").render(d=data, method=settings.consensus)

    @app.get("/dashboard/{name}.png")
    def plot(name: str, _: Me) -> Response:
        if name not in stats.PLOTS:
            raise AnnotateError(404, "not_found", f"no plot {name!r}; plots: {list(stats.PLOTS)}")
        png = stats.plot_png(stats.collect(store, settings.consensus), name)
        return Response(png, media_type="image/png")

    return app
