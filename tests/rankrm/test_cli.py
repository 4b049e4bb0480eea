"""The command line: help for every option, clean errors, evaluate end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rankrm.cli import app
from training.config import TrainConfig

runner = CliRunner()

# TrainConfig fields whose CLI names differ from the field name.
CLI_NAMES = {"train_file": "train_file", "dev_file": "--dev", "format": "--format"}


def option_name(field: str) -> str:
    return CLI_NAMES.get(field, "--" + field.replace("_", "-"))


def test_top_level_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.output and "evaluate" in result.output


def test_train_help_explains_every_config_field() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    missing = [f for f in TrainConfig.field_names() if option_name(f) not in result.output]
    assert missing == []


def test_evaluate_help() -> None:
    result = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("checkpoint", "data_file", "--format", "--list-size", "--output"):
        assert option in result.output


def test_malformed_training_file_fails_with_file_and_line(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"responses": ["a", "b"]}\n{"responses": ["a"]}\n')
    result = runner.invoke(
        app, ["train", str(data), "--out", str(tmp_path / "o"), "--backbone", str(tiny_backbone)]
    )
    assert result.exit_code == 2
    assert f"{data}:2: a ranking list needs at least 2 responses" in result.output
    assert not (tmp_path / "o").exists()


def test_evaluate_reports_metrics(tmp_path: Path, tiny_backbone: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"responses": ["good film", "bad film"]}\n{"prompt": "q", "responses": ["a", "b", "c"]}\n'
    )
    report = tmp_path / "m.json"
    result = runner.invoke(
        app, ["evaluate", str(tiny_backbone), str(data), "--output", str(report)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert metrics["lists"] == 2 and metrics["pairs"] == 4
    for key in (
        "pairwise_accuracy",
        "exact_order_accuracy",
        "kendall_tau",
        "mean_margin",
        "reward_mean",
        "reward_std",
    ):
        assert key in metrics


def test_evaluate_missing_checkpoint_is_a_clean_error(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"responses": ["a", "b"]}\n')
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), str(data)])
    assert result.exit_code == 2
    assert "no config.json" in result.output


@pytest.mark.parametrize("module", ["rankrm", "rankrm.cli", "rankrm.encoding"])
def test_shared_side_never_imports_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_runs_without_torch() -> None:
    code = (
        "import sys; sys.argv = ['rankrm', 'train', '--help']\n"
        "from rankrm.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)


def test_export_command_writes_a_model_folder(tmp_path: Path, tiny_backbone: Path) -> None:
    from tests.conftest import checkpoint_of, texts_file

    ckpt = checkpoint_of(tiny_backbone, tmp_path / "ckpt")
    out = tmp_path / "model"
    args = [
        "export",
        str(ckpt),
        "--out",
        str(out),
        "--reference",
        str(texts_file(tmp_path / "r.jsonl")),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["checks"]["loads_without_torch"] is True
    assert (out / "manifest.json").is_file()


def test_export_int8_without_held_out_data_fails_cleanly(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    from tests.conftest import checkpoint_of, texts_file

    ckpt = checkpoint_of(tiny_backbone, tmp_path / "ckpt")
    ref = texts_file(tmp_path / "r.jsonl")
    args = [
        "export",
        str(ckpt),
        "--out",
        str(tmp_path / "m"),
        "--reference",
        str(ref),
        "--quantize",
        "int8",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "needs held-out lists" in result.output
    assert not (tmp_path / "m").exists()


def test_serve_help_covers_every_setting() -> None:
    from app.config import Settings

    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    env_only = {"verify_checksums"}  # operators rarely flip it: RANKRM_VERIFY_CHECKSUMS
    names = [name for name in Settings.model_fields if name not in env_only]
    flags = {"models": "--model NAME=DIR", "weights": "--weight NAME=WEIGHT"}  # repeatable
    output = " ".join(result.output.split())
    missing = [
        n for n in names if "--" + n.replace("_", "-") not in result.output and n not in flags
    ]
    assert missing == []
    assert "--model <list[str]>" in output and "--weight <list[str]>" in output  # repeatable
    flat = re.sub(r"[│\s]+", " ", result.output)  # rich's wrapped help cells, unwrapped
    undocumented = [n for n in names if f"env RANKRM_{n.upper()}" not in flat]
    assert undocumented == []


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["helpful"], "'helpful' is not NAME=WEIGHT"),
        (["helpful=lots"], "'helpful=lots' is not NAME=WEIGHT"),
        (["=1"], "'=1' is not NAME=WEIGHT"),
        (["a=1", "b=nan"], "--head-weight #2"),
    ],
)
def test_export_head_weights_must_be_name_equals_number(
    tmp_path: Path, given: list[str], problem: str
) -> None:
    args = ["export", str(tmp_path), "--out", str(tmp_path / "m")]
    for item in given:
        args += ["--head-weight", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert problem in result.output
    assert not (tmp_path / "m").exists()


def test_export_head_weights_of_a_one_output_model_are_refused(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    from tests.conftest import checkpoint_of, texts_file

    ckpt = checkpoint_of(tiny_backbone, tmp_path / "ckpt")
    ref = str(texts_file(tmp_path / "r.jsonl"))
    args = ["export", str(ckpt), "--out", str(tmp_path / "m"), "--reference", ref]
    result = runner.invoke(app, [*args, "--head-weight", "helpful=1"])
    assert result.exit_code == 2
    assert "head weights given, but the model has one output" in result.output


def test_serve_refuses_inconsistent_limits_naming_values_and_fix() -> None:
    result = runner.invoke(app, ["serve", "--max-items", "100000", "--max-queue", "4096"])
    assert result.exit_code == 2
    assert "max_queue (4096) must hold at least one full request of max_items (100000)" in (
        " ".join(result.output.split())
    )
    assert "set max_queue to 100000 or more (--max-queue)" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "args",
    [
        ["export", "/nonexistent", "--out", "/nonexistent-out"],
        ["train", "/nonexistent.tsv", "--out", "/nonexistent-out"],
        ["serve", "--max-items", "100000", "--max-queue", "4096"],
    ],
    ids=["export", "train", "serve"],
)
def test_every_command_fails_in_one_style(args: list[str]) -> None:
    """One line on stderr, ``error: `` first, status 2: the same for every command."""
    done = subprocess.run(
        [sys.executable, "-m", "rankrm", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_serve_names_a_bad_setting_as_its_flag_with_the_value() -> None:
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "--port 0: Input should be greater than or equal to 1" in result.output


def test_the_old_client_import_still_works_and_warns() -> None:
    code = "import app.client as c; assert c.RewardClient"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0
    assert "app.client moved to rankrm.client" in done.stderr


BLOCK = (
    "import importlib.abc, sys\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {blocked!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = ['rankrm', *{args!r}]\n"
    "from rankrm.cli import main\n"
    "main()\n"
)


def test_a_command_whose_part_is_not_installed_says_what_to_install() -> None:
    """As in the service image (no training/) or a training-only install (no web stack)."""
    no_training = [sys.executable, "-c", BLOCK.format(blocked=("training", "torch"),
                   args=["train", "data.jsonl", "--lr", "1"])]  # fmt: skip
    done = subprocess.run(no_training, capture_output=True, text=True)
    assert done.returncode == 2
    assert "rankrm train is not available here: training is not installed" in done.stderr
    assert "pip install 'rankrm[train]'" in done.stderr
    serve_help = BLOCK.format(blocked=("training",), args=["serve", "--help"])
    done = subprocess.run([sys.executable, "-c", serve_help], capture_output=True, text=True)
    assert done.returncode == 0 and "--max-batch-size" in done.stdout
    no_web = BLOCK.format(blocked=("app", "pydantic_settings"), args=["serve"])
    done = subprocess.run([sys.executable, "-c", no_web], capture_output=True, text=True)
    assert done.returncode == 2 and "pip install 'rankrm[serve]'" in done.stderr
