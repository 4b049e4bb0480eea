"""Start-up, shutdown and the no-torch rule, with real processes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def test_sigterm_finishes_requests_in_flight(model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "slow_server.py"
    script.write_text(
        "import sys, time, uvicorn\n"
        "from pathlib import Path\n"
        "from app.config import Settings\n"
        "from app.engine import OnnxEngine\n"
        "from app.main import create_app\n"
        "from rankrm.runtime import OnnxRewardModel\n"
        "class Slow(OnnxEngine):\n"
        "    def run(self, encodings, **kw):\n"
        "        time.sleep(1.0)\n"
        "        return super().run(encodings, **kw)\n"
        "settings = Settings(model_dir=Path(sys.argv[1]))\n"
        "app = create_app(settings, Slow(OnnxRewardModel.load(settings.model_dir)))\n"
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(model_dir), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        wait_ready(url, proc)
        results: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{url}/score", json={"texts": ["good"]}, timeout=30)
            )
        )
        request.start()
        time.sleep(0.3)  # the request is in the model now
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{url}/health", timeout=2)
        request.join(timeout=30)
        assert results and results[0].status_code == 200, "the request in flight must finish"
        assert len(results[0].json()["rewards"]) == 1
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankrm", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_model_folder_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = run_serve("--model-dir", str(tmp_path / "absent"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot load the model: {tmp_path / 'absent'}: model folder not found"]


def test_corrupt_model_exits_non_zero(model_dir: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(model_dir, tmp_path / "broken"))
    (broken / "model.onnx").write_bytes(b"not a model")
    result = run_serve("--model-dir", str(broken))
    assert result.returncode == 2
    assert "sha256 does not match" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def _edit_manifest(folder: Path, change: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _truncate_model_keeping_checksums(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    _edit_manifest(folder, lambda m: m["files"].update({"model.onnx": digest}))


BROKEN_FOLDERS: dict[str, tuple[Any, str]] = {
    "truncated-model": (
        _truncate_model_keeping_checksums,
        "model.onnx: onnxruntime cannot load it",
    ),
    "not-a-tokenizer": (
        lambda d: (d / "tokenizer.json").write_text('{"hello": 1}'),
        "tokenizer.json: not a tokenizer",
    ),
    "max-length-string": (
        lambda d: _edit_manifest(d, lambda m: m.update(max_length="128")),
        "max_length must be a positive integer, got '128'",
    ),
    "unknown-input": (
        lambda d: _edit_manifest(d, lambda m: m["inputs"][0].update(name="ids")),
        "do not match the graph's",
    ),
    "pad-outside-vocabulary": (
        lambda d: _edit_manifest(d, lambda m: m.update(pad_token_id=10**7)),
        "pad_token_id 10000000 is outside the tokenizer's vocabulary",
    ),
    "scale-zero": (
        lambda d: _edit_manifest(d, lambda m: m["normalization"].update(scale=0.0)),
        "normalization.scale must be above 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FOLDERS))
def test_every_broken_model_folder_is_one_line_and_exit_2(
    model_dir: Path, tmp_path: Path, case: str
) -> None:
    breaks, words = BROKEN_FOLDERS[case]
    broken = Path(shutil.copytree(model_dir, tmp_path / case))
    breaks(broken)
    verify = "true" if case == "truncated-model" else "false"  # checksums pass, or are off
    result = subprocess.run(
        [sys.executable, "-m", "rankrm", "serve", "--model-dir", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RANKRM_VERIFY_CHECKSUMS": verify},
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot load the model: ")
    assert words in lines[0]


def test_bad_settings_exit_non_zero(model_dir: Path) -> None:
    result = run_serve("--model-dir", str(model_dir), "--max-batch-size", "0")
    assert result.returncode == 2
    assert "--max-batch-size 0: Input should be greater than or equal to 1" in result.stderr


def test_serve_command_starts_the_service(model_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "RANKRM_MAX_ITEMS": "7"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rankrm",
            "serve",
            "--model-dir",
            str(model_dir),
            "--port",
            str(port),
            "--split-overhead-tokens",
            "25",
            "--access-log",
        ],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        limits = httpx.get(f"{url}/info").json()["limits"]
        assert limits["max_items"] == 7  # env applied
        assert limits["split_overhead_tokens"] == 25  # flag applied, nothing measured
        assert httpx.post(f"{url}/score", json={"texts": ["good"]}).status_code == 200
        long = {"texts": ["word " * 1000]}  # tokenised in the background thread
        assert httpx.post(f"{url}/score", json=long, timeout=30).status_code == 200
        # The event loop's thread keeps the process's priority; the model's, onnxruntime's
        # and the tokenizer's threads run below it (app/priority.py).
        nice = {
            int(task.name): int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
            for task in Path(f"/proc/{proc.pid}/task").iterdir()
        }
        assert nice[proc.pid] == 0
        assert sum(value == 19 for value in nice.values()) >= 3, nice
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # a graceful stop is a success, not 143
        assert '"POST /score HTTP/1.1" 200' in proc.communicate()[0]  # --access-log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("module", ["app", "app.main", "rankrm.client", "app.engine"])
def test_importing_the_service_never_imports_torch(module: str) -> None:
    code = (
        f"import json, sys, {module}\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]\n"
        "print(json.dumps(sorted(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKRM_API_KEYS", "key-one-123, key-two-456")
    monkeypatch.setenv("RANKRM_MAX_WAIT_MS", "5")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one-123", "key-two-456"]
    assert settings.max_wait_ms == 5
    assert "key-one" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_keys": "short"}, r"at least 8 characters long \(key 1: 5\); use longer"),
        (
            {"max_batch_tokens": 16, "max_batch_size": 32},
            r"max_batch_tokens \(16\) must be at least max_batch_size \(32\); raise",
        ),
        (
            {"max_queue": 10, "max_items": 20},
            r"max_queue \(10\) must hold .* max_items \(20\) texts; set max_queue to 20",
        ),
        ({"port": 0}, "port"),
    ],
)
def test_unsafe_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_start_up_log_names_the_model_and_how_it_runs(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from app.main import create_app

    settings = Settings(model_dir=Path("models/x"), model_workers=2, threads=1)
    with caplog.at_level(logging.INFO, logger="rankrm.service"):
        create_app(settings, engine)
    line = next(r.getMessage() for r in caplog.records if "serving model" in r.getMessage())
    manifest = engine.manifest
    assert f"serving model {manifest.name!r} from {Path('models/x').resolve()}" in line
    assert f"max length {manifest.max_length} tokens" in line
    assert f"weights {manifest.quantization['dtype']}" in line
    assert f"reward = (raw - {manifest.normalization.offset:.4g})" in line
    assert "cpu provider CPUExecutionProvider, 2 model worker(s) x 1 thread(s)" in line
