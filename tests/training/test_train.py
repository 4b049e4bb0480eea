"""Training end to end on a tiny model: learning, outputs, resume after a kill, two processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.config import TrainConfig
from training.data import load_lists
from training.evaluate import evaluate_lists
from training.model import latest_checkpoint, load_reward_model
from training.train import epoch_batches, train

POSITIVE = ["good", "great", "love", "best", "happy", "nice"]
NEGATIVE = ["bad", "awful", "hate", "worst", "sad", "poor"]
FILLER = ["the", "movie", "film", "was", "very", "plot", "acting", "it", "this"]


def separable_lists(path: Path, n: int, seed: int) -> Path:
    """Ranking lists where a positive word always beats a negative one (K of 2 or 3)."""
    rng = random.Random(seed)

    def sentence(word: str) -> str:
        words = [*rng.sample(FILLER, rng.randint(1, 6)), word]
        rng.shuffle(words)
        return " ".join(words)

    rows = []
    for _ in range(n):
        responses = [sentence(rng.choice(POSITIVE)), sentence(rng.choice(NEGATIVE))]
        if rng.random() < 0.5:
            responses.append(sentence(rng.choice(NEGATIVE)) + " " + rng.choice(NEGATIVE))
        ranks = [1, 2, 2][: len(responses)]
        rows.append({"responses": responses, "ranks": ranks})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(tmp_path: Path, backbone: Path, **overrides: object) -> TrainConfig:
    options: dict[str, object] = dict(
        train_file=separable_lists(tmp_path / "train.jsonl", 64, seed=0),
        dev_file=separable_lists(tmp_path / "dev.jsonl", 32, seed=1),
        out=tmp_path / "run",
        backbone=backbone,
        batch_size=8,
        lr=3e-3,
        max_steps=40,
        eval_every=20,
        save_every=20,
        bf16="off",
        progress=False,
        threads=1,
    )
    options.update(overrides)
    return TrainConfig(**options)  # type: ignore[arg-type]


def test_training_learns_a_separable_set(tiny_backbone: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, tiny_backbone)
    before = load_reward_model(tiny_backbone).model.state_dict()
    dev = load_lists(cfg.dev_file).lists  # type: ignore[arg-type]

    result = train(cfg)

    after = load_file(result.best / "model.safetensors")
    moved = [
        name
        for name, value in before.items()
        if name in after and not torch.equal(value, after[name])
    ]
    assert len(moved) > len(before) // 2, "most backbone parameters should move"
    losses = [
        json.loads(line)["loss"]
        for line in result.metrics_file.read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert result.best_metrics["pairwise_accuracy"] == 1.0
    assert evaluate_lists(load_reward_model(result.best), dev)["pairwise_accuracy"] == 1.0
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((cfg.out / "config.json").read_text())["lr"] == 3e-3
    state = json.loads((result.last / "trainer_state.json").read_text())
    assert state["step"] == 40


@pytest.mark.parametrize("loss", ["listwise", "article"])
def test_other_losses_train_too(tiny_backbone: Path, tmp_path: Path, loss: str) -> None:
    result = train(config(tmp_path, tiny_backbone, loss=loss, max_steps=30, eval_every=0))
    assert result.best_metrics["pairwise_accuracy"] > 0.9


def test_batches_cover_every_list_once_per_epoch(tmp_path: Path) -> None:
    lists = load_lists(separable_lists(tmp_path / "t.jsonl", 50, seed=2)).lists
    batches = epoch_batches(lists, 8, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert batches == epoch_batches(lists, 8, seed=0, epoch=0)
    assert batches != epoch_batches(lists, 8, seed=0, epoch=1)


def run_cli(args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``python -m rankrm ARGS`` with output captured."""
    command = [sys.executable, "-m", "rankrm", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def cli_args(cfg: TrainConfig, out: Path) -> list[str]:
    return [
        "train",
        str(cfg.train_file),
        "--dev",
        str(cfg.dev_file),
        "--out",
        str(out),
        "--backbone",
        str(cfg.backbone),
        "--batch-size",
        str(cfg.batch_size),
        "--lr",
        str(cfg.lr),
        "--max-steps",
        str(cfg.max_steps),
        "--save-every",
        str(cfg.save_every),
        "--eval-every",
        str(cfg.eval_every),
        "--bf16",
        "off",
        "--threads",
        "1",
        "--no-progress",
    ]


def saved_step(out: Path) -> int:
    """The step of the checkpoint ``--resume`` would read (``last/``, or ``last.old/`` when
    a save was caught between its two renames); -1 before the first save."""
    folder = latest_checkpoint(out / "last")
    if folder is None:
        return -1
    try:
        return int(json.loads((folder / "trainer_state.json").read_text())["step"])
    except FileNotFoundError:  # renamed away while being read
        return -1


def test_resume_after_kill_matches_an_uninterrupted_run(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, tiny_backbone, max_steps=300, save_every=10, eval_every=100)
    killed_out, whole_out = tmp_path / "killed", tmp_path / "whole"

    proc = run_cli(cli_args(cfg, killed_out))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and saved_step(killed_out) < 30:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # may land mid-swap of last/: resume must cope
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = saved_step(killed_out)
    if (killed_out / "last").is_dir():  # always take the harder path: killed between renames
        shutil.rmtree(killed_out / "last.old", ignore_errors=True)
        (killed_out / "last").rename(killed_out / "last.old")
    assert 30 <= killed_at < 300, "the run should be killed part-way"
    with (killed_out / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 9')  # as if killed in the middle of a line

    resumed = run_cli([*cli_args(cfg, killed_out), "--resume"])
    whole = run_cli(cli_args(cfg, whole_out))
    for p in (resumed, whole):
        output = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, output

    assert not (killed_out / "last.old").exists(), "the resumed run's first save cleans up"
    got = load_file(killed_out / "last" / "model.safetensors")
    want = load_file(whole_out / "last" / "model.safetensors")
    # Bit for bit: with one thread and parameters in storage of their own (see
    # ``own_aligned_storage``) a resumed run computes exactly what an uninterrupted one does.
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    killed_rows, whole_rows = (
        [
            row
            for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in (row := json.loads(line))
        ]
        for out in (killed_out, whole_out)
    )
    assert [r["step"] for r in killed_rows] == list(range(1, 301)), "no step twice or lost"
    for mine, theirs in zip(killed_rows, whole_rows, strict=True):
        assert (mine["step"], mine["loss"], mine["lr"]) == (
            theirs["step"],
            theirs["loss"],
            theirs["lr"],
        )


def test_two_processes_match_one_with_the_same_global_batch(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, tiny_backbone, max_steps=12, eval_every=0, save_every=100)
    one, two = tmp_path / "one", tmp_path / "two"
    single = run_cli(cli_args(cfg, one))
    args = cli_args(cfg, two)
    args[args.index("--batch-size") + 1] = str(cfg.batch_size // 2)  # per process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29531",
            "-m",
            "rankrm",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert launcher.returncode == 0, launcher.stdout + launcher.stderr
    output = single.communicate(timeout=300)[0].decode()
    assert single.returncode == 0, output

    got = load_file(two / "last" / "model.safetensors")
    want = load_file(one / "last" / "model.safetensors")
    # Each step moves a weight by up to lr (3e-3) under Adam: a rank that saw the wrong
    # lists or skipped the gradient average would be off by that much, not by float noise.
    for name in set(want) - {"classifier.bias"}:  # no gradient: see the resume test
        torch.testing.assert_close(got[name], want[name], atol=2e-4, rtol=1e-3)
    losses = [
        [
            row["loss"]
            for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in (row := json.loads(line))
        ]
        for out in (one, two)
    ]
    assert len(losses[1]) == 12  # rank 0 logs alone
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
