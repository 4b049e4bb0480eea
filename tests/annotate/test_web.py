"""The annotation app over HTTP on loopback: login, the task flow, every refusal as a JSON
error, escaping, the dashboard and eight annotators at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from rankrm.annotate.tasks import TaskSpec
from rankrm.annotate.web import AppSettings
from tests.annotate.conftest import AppServer, make_tasks, open_store, serving

XSS = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


@pytest.fixture
def app(sqlite_url: str) -> Iterator[AppServer]:
    store = open_store(sqlite_url, overlap=2)
    store.load([TaskSpec("x", XSS, (XSS, "plain", "third")), *make_tasks(3)], "f")
    with serving(store, AppSettings(guidelines="Prefer the helpful answer.")) as server:
        yield server


@contextmanager
def client(app: AppServer, name: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client with its own cookies, logged in as ``name`` if given."""
    with httpx.Client(base_url=app.url, timeout=30) as c:
        if name is not None:
            response = c.post("/api/login", json={"name": name})
            assert response.status_code == 200, response.text
        yield c


def ranked(task: dict[str, object]) -> list[list[int]]:
    responses = task["responses"]
    assert isinstance(responses, list)
    return [[r["index"]] for r in responses]


def test_the_task_flow_over_http(app: AppServer) -> None:
    with client(app, "ann") as ann:
        assert ann.get("/api/config").json()["guidelines"] == "Prefer the helpful answer."
        body = ann.get("/api/next").json()
        task = body["task"]
        assert task["task_id"] == "x" and body["progress"]["total"] == 4
        assert body["annotator"] == "ann"
        assert sorted(r["index"] for r in task["responses"]) == [0, 1, 2]
        assert "model_rewards" not in task and "priority" not in task  # no anchoring
        order = [[task["responses"][0]["index"]], [r["index"] for r in task["responses"][1:]]]
        done = ann.post("/api/submit", json={"assignment": task["assignment"], "order": order})
        assert done.status_code == 200 and done.json()["progress"]["mine"] == 1
        reopened = ann.post("/api/undo").json()["task"]
        assert reopened["task_id"] == "x" and reopened["previous"] == order
        nxt = ann.post("/api/skip", json={"assignment": reopened["assignment"]})
        assert nxt.status_code == 200 and nxt.json()["progress"]["mine"] == 0


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        ({"assignment": "A", "order": [[0], [1]]}, 422, "invalid_request", "leaves out"),
        ({"assignment": "A", "order": [[0], [1], [5]]}, 422, "invalid_request", "order[2][0]"),
        ({"assignment": "A"}, 422, "invalid_request", "order: Field required"),
        ({"assignment": "nope", "order": [[0], [1], [2]]}, 409, "conflict", "is not open"),
    ],
)
def test_bad_submissions_get_a_json_4xx_and_lose_nothing(
    app: AppServer, body: dict[str, object], status: int, error_type: str, message: str
) -> None:
    with client(app, "ann") as ann:
        task = ann.get("/api/next").json()["task"]
        if body.get("assignment") == "A":
            body = {**body, "assignment": task["assignment"]}
        response = ann.post("/api/submit", json=body)
        assert response.status_code == status
        assert response.json()["error_type"] == error_type
        assert message in response.json()["error"]
        good = ann.post(
            "/api/submit", json={"assignment": task["assignment"], "order": ranked(task)}
        )
        assert good.status_code == 200  # the assignment is still open after the refusal


def test_someone_elses_assignment_and_no_login_are_refused(app: AppServer) -> None:
    with client(app, "ann") as ann, client(app, "bob") as bob, client(app) as nobody:
        task = ann.get("/api/next").json()["task"]
        stolen = bob.post(
            "/api/submit", json={"assignment": task["assignment"], "order": ranked(task)}
        )
        assert stolen.status_code == 403 and stolen.json()["error_type"] == "forbidden"
        for response in (
            nobody.get("/api/next"),
            nobody.post("/api/undo"),
            nobody.get("/dashboard"),
        ):
            assert response.status_code == 401
            assert response.json() == {
                "error": "no annotator: log in with your name first",
                "error_type": "unauthorized",
            }
        broken = ann.post("/api/submit", content=b"{", headers={"content-type": "application/json"})
        assert broken.status_code == 422 and broken.json()["error_type"] == "invalid_request"


def test_tokens_when_auth_is_set(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    store.load(make_tasks(1), "f")
    tokens = {"s3cret-token-of-ann-0001": "ann"}
    with serving(store, AppSettings(tokens=tokens)) as app, client(app) as c:
        assert c.get("/api/config").json()["auth"] is True
        refused = c.post("/api/login", json={"name": "ann", "token": "guess"})
        assert refused.status_code == 401
        assert (
            c.post("/api/login", json={"token": "s3cret-token-of-ann-0001"}).json()["name"] == "ann"
        )
        assert c.get("/api/next").json()["task"]["task_id"] == "t0"
        c.cookies.set("rankrm_annotator", "forged")
        assert c.get("/api/next").status_code == 401


def test_the_dashboard_escapes_text_and_draws_its_plots(app: AppServer) -> None:
    with client(app, "ann") as ann, client(app, "bob") as bob:
        for person, flip in ((ann, False), (bob, True)):
            task = person.get("/api/next").json()["task"]
            order = ranked(task)
            order = sorted(order) if not flip else sorted(order, reverse=True)
            person.post("/api/submit", json={"assignment": task["assignment"], "order": order})
        page = ann.get("/dashboard")
        assert page.status_code == 200
        assert "<script>document.title" not in page.text
        assert "&lt;script&gt;document.title" in page.text
        assert 'id="pairwise">0.0 %' in page.text  # the two reversed each other entirely
        stats = ann.get("/api/stats").json()
        assert stats["tasks"][0]["id"] == "x" and stats["tasks"][0]["kendall_w"] == 0.0
        for plot in ("agreement", "annotators"):
            png = ann.get(f"/dashboard/{plot}.png")
            assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert ann.get("/dashboard/nothing.png").status_code == 404


@pytest.mark.slow
def test_eight_annotators_over_http_lose_no_task_and_book_none_twice(sqlite_url: str) -> None:
    """The issue's concurrency check, through the app: 500 tasks, overlap 3, 8 annotators."""
    store = open_store(sqlite_url, overlap=3)
    store.load(make_tasks(500, k=3), "f")
    done: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    failures: list[str] = []

    def annotate(name: str) -> None:
        try:
            with client(server, name) as c:
                while (task := c.get("/api/next").json()["task"]) is not None:
                    body = {"assignment": task["assignment"], "order": ranked(task)}
                    r = c.post("/api/submit", json=body)
                    if r.status_code != 200:
                        failures.append(r.text)
                        return
                    with lock:
                        done[(task["task_id"], name)] += 1
        except Exception as exc:  # reported by the main thread
            failures.append(repr(exc))

    with serving(store) as server:
        threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with client(server, "a0") as c:
            progress = c.get("/api/next").json()["progress"]
    assert not failures
    per_task = Counter(task for task, _ in done)
    assert len(per_task) == 500 and set(per_task.values()) == {3}
    assert set(done.values()) == {1}
    assert (progress["complete"], progress["judgements"]) == (500, 1500)


def test_an_oversized_body_is_refused_and_the_app_goes_on(app: AppServer) -> None:
    with client(app, "ann") as ann:
        big = b'{"assignment": "' + b"x" * (2 << 20) + b'"}'
        declared = ann.post(
            "/api/submit", content=big, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413 and declared.json()["error_type"] == "too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"assignment": "'
            for _ in range(40):
                yield b"x" * 65536
            yield b'"}'

        chunked = ann.post(
            "/api/skip", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert ann.get("/api/next").json()["task"] is not None  # still serving
