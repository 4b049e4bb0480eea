"""``rankrm annotate``: load, serve, export, and the loop into ``rankrm train``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from rankrm.cli import app
from tests.annotate.conftest import open_store, write_tasks

runner = CliRunner()

TASKS = [
    {
        "id": f"q{i}",
        "prompt": f"Rate movie {i}.",
        "responses": [
            f"A wonderful, moving film {i}.",
            f"An average film {i}.",
            f"A dull, awful film {i}.",
        ],
    }
    for i in range(6)
]


def test_a_bad_task_file_stops_with_file_and_line_and_stores_nothing(tmp_path: Path) -> None:
    path = write_tasks(tmp_path / "tasks.jsonl", [TASKS[0], TASKS[1]])
    with path.open("a") as handle:
        handle.write('{"prompt": "p", "responses": ["only one"]}\n')
    db = str(tmp_path / "a.db")
    result = runner.invoke(app, ["annotate", "load", str(path), "--db", db])
    assert result.exit_code == 2
    assert f"{path}:3: field 'responses' holds 1" in result.output
    assert open_store(db).progress().total == 0


def test_annotate_export_train_the_loop(tmp_path: Path, tiny_backbone: Path) -> None:
    """Tasks loaded twice (idempotent), ranked, exported, and trained on by rankrm train."""
    path = write_tasks(tmp_path / "tasks.jsonl", TASKS)
    db = str(tmp_path / "a.db")
    for added in ("6 tasks added", "0 tasks added, 6 already there"):
        result = runner.invoke(app, ["annotate", "load", str(path), "--db", db])
        assert result.exit_code == 0 and added in result.output, result.output
    store = open_store(db, overlap=2)
    for name in ("ann", "bob"):
        me = store.annotator(name)
        while (shown := store.next(me)) is not None:
            store.submit(me, shown.assignment, [[0], [1], [2]])
    out = tmp_path / "rankings.jsonl"
    result = runner.invoke(
        app, ["annotate", "export", "--db", db, "--out", str(out), "--consensus", "ranked-pairs"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == 6
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(out),
            "--dev",
            str(out),
            "--out",
            str(run),
            "--backbone",
            str(tiny_backbone),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (run / "best").is_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_with_tokens_and_guidelines(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks.jsonl", TASKS[:2])
    (tmp_path / "guide.txt").write_text("Prefer specific reviews.")
    (tmp_path / "tokens").write_text("# annotators\nann ann-token-0123456789\n")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rankrm",
            "annotate",
            "serve",
            str(tasks),
            "--db",
            str(tmp_path / "a.db"),
            "--port",
            str(port),
            "--auth",
            str(tmp_path / "tokens"),
            "--guidelines",
            str(tmp_path / "guide.txt"),
            "--overlap",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        with httpx.Client(base_url=url) as c:
            assert c.get("/api/config").json() == {
                "auth": True,
                "guidelines": "Prefer specific reviews.",
            }
            assert c.post("/api/login", json={"name": "ann"}).status_code == 401
            assert c.post("/api/login", json={"token": "ann-token-0123456789"}).status_code == 200
            assert c.get("/api/next").json()["task"]["task_id"] == "q0"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "2 tasks added" in output


def test_a_bad_token_file_is_refused_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("ann short\n")
    result = runner.invoke(
        app,
        ["annotate", "serve", "--db", str(tmp_path / "a.db"), "--auth", str(tmp_path / "tokens")],
    )
    assert result.exit_code == 2
    assert f"{tmp_path / 'tokens'}:1: expected 'NAME TOKEN'" in result.output


def test_the_annotation_app_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from rankrm.annotate import web, export, stats, model_loop\n"
        "from rankrm.annotate.cli import app\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
