"""The training loop: ranking lists in, the best reward-model checkpoint out.

One optimizer step: ``grad_accum`` micro-batches of ``batch_size`` lists per process; all
responses of a micro-batch go through the model in one forward pass (padded to that
batch's longest text), the ranking loss is taken over the ``(B, K)`` reward matrix.

Output folder::

    best/            Hugging Face checkpoint with the best dev pairwise accuracy
    last/            the latest checkpoint plus optimizer state: what --resume reads
    metrics.jsonl    one line per logged step and per evaluation
    training.png     loss and dev accuracy
    config.json      the run's configuration
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from rankrm.encoding import EncodingSpec
from training.config import TrainConfig
from training.data import LoadResult, RankingList, load_lists, split_dev
from training.distributed import World, close_world, init_world
from training.evaluate import evaluate_lists
from training.losses import ranking_loss
from training.model import (
    RewardModel,
    default_backbone,
    latest_checkpoint,
    load_reward_model,
    save_checkpoint,
)
from training.plot import plot_metrics

log = logging.getLogger("rankrm.train")

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class TrainState:
    """Where training stands; saved with every resumable checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # cursor into the data: epoch ...
    batch: int = 0  # ... and next micro-batch within it
    best_accuracy: float = -1.0
    best_step: int = -1


@dataclass
class TrainResult:
    """What a finished run produced."""

    best: Path
    last: Path
    metrics_file: Path
    plot: Path
    steps: int
    best_metrics: dict[str, float]


def epoch_batches(
    lists: Sequence[RankingList], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices of each micro-batch of one epoch, reproducible from (seed, epoch).

    Lists are shuffled, then sorted by length inside windows of 50 batches so a batch
    holds texts of similar length (less padding), then the batches are shuffled again.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lists)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(
            order[start : start + window], key=lambda i: max(map(len, lists[i].responses))
        )
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def bf16_enabled(setting: str) -> bool:
    """bf16 autocast: on where the CPU has native bf16 (AVX512-BF16/AMX) unless told."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported())


def _load_data(config: TrainConfig, world: World) -> tuple[list[RankingList], list[RankingList]]:
    options: dict[str, Any] = {
        "fmt": config.format,
        "has_prompt": config.has_prompt,
        "list_size": config.list_size,
        "seed": config.seed,
        "skip_bad": config.skip_bad,
    }
    train = load_lists(config.train_file, lists_per_text=config.lists_per_text, **options)
    _report_skipped(train, world)
    if config.dev_file is not None:
        dev = load_lists(config.dev_file, **options)
        _report_skipped(dev, world)
        return train.lists, dev.lists
    if config.dev_fraction > 0:
        return split_dev(train.lists, config.dev_fraction, config.seed)
    return train.lists, []


def _report_skipped(result: LoadResult, world: World) -> None:
    if result.skipped and world.is_main:
        log.warning(
            "skipped %d malformed record(s); first: %s", len(result.skipped), result.skipped[0]
        )


class Trainer:
    """Holds the model, optimizer and state of one run; :meth:`fit` trains it."""

    def __init__(self, config: TrainConfig, world: World) -> None:
        self.config = config
        self.world = world
        self.out = Path(config.out)
        self.metrics_file = self.out / "metrics.jsonl"
        torch.manual_seed(config.seed)
        self.train_lists, self.dev_lists = _load_data(config, world)
        global_batch = config.batch_size * world.size
        if len(self.train_lists) < global_batch:
            raise ValueError(
                f"{len(self.train_lists)} training lists cannot fill one batch of {global_batch}"
            )
        self.batches_per_epoch = (
            len(self.train_lists) // global_batch
            if world.size > 1
            else (math.ceil(len(self.train_lists) / config.batch_size))
        )
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))

        resume_from = latest_checkpoint(self.out / "last") if config.resume else None
        spec = EncodingSpec(config.max_length, config.truncation_side)
        self.rm: RewardModel = load_reward_model(
            resume_from or config.backbone or default_backbone(), spec
        )
        self.rm.model.train()
        self.module: torch.nn.Module = (
            DistributedDataParallel(self.rm.model) if world.size > 1 else self.rm.model
        )
        self.optimizer = torch.optim.AdamW(
            self.rm.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        warmup = int(config.warmup_ratio * self.total_steps)
        total = self.total_steps

        def schedule(step: int) -> float:  # linear warmup, then linear decay to zero
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.state = TrainState()
        self.bf16 = bf16_enabled(config.bf16)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        if resume_from is not None:
            self._restore(resume_from)

    # ------------------------------------------------------------------ data cursor
    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            size = self.config.batch_size * self.world.size
            batches = epoch_batches(self.train_lists, size, self.config.seed, epoch)
            if self.world.size > 1:  # every rank needs its share of every batch
                batches = [b for b in batches if len(b) == size]
            self._epoch_cache = (epoch, batches)
        return self._epoch_cache[1]

    def _next_micro_batch(self) -> list[RankingList]:
        batches = self._batches(self.state.epoch)
        if self.state.batch >= len(batches):
            self.state.epoch += 1
            self.state.batch = 0
            batches = self._batches(self.state.epoch)
        indices = batches[self.state.batch][self.world.rank :: self.world.size]
        self.state.batch += 1
        return [self.train_lists[i] for i in indices]

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns its statistics."""
        config = self.config
        total_loss = 0.0
        n_lists = n_texts = 0
        for micro in range(config.grad_accum):
            lists = self._next_micro_batch()
            sync = micro == config.grad_accum - 1 or not isinstance(
                self.module, DistributedDataParallel
            )
            no_sync = nullcontext() if sync else self.module.no_sync()  # type: ignore[operator]
            with no_sync:
                autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
                with autocast:
                    rewards, mask = self.rm.forward_lists(lists, module=self.module)  # (B, K)
                ranks = torch.zeros_like(rewards, dtype=torch.long)  # (B, K)
                for row, lst in enumerate(lists):
                    ranks[row, : len(lst.ranks)] = torch.tensor(lst.ranks)
                loss = ranking_loss(
                    config.loss,
                    rewards,
                    ranks,
                    mask,
                    margin=config.margin,
                    center_coefficient=config.center_coefficient,
                )
                (loss / config.grad_accum).backward()
            total_loss += loss.item() / config.grad_accum
            n_lists += len(lists)
            n_texts += int(mask.sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.rm.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return {
            "loss": total_loss,
            "grad_norm": float(grad_norm),
            "lists": n_lists,
            "texts": n_texts,
        }

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train to ``total_steps``, evaluating and checkpointing on the way."""
        config, world = self.config, self.world
        if world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            config.save(self.out / "config.json")
            self._trim_metrics()
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            unit="step",
            disable=not (config.progress and world.is_main),
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        while self.state.step < self.total_steps:
            tick = time.perf_counter()
            stats = self.train_step()
            elapsed = time.perf_counter() - tick
            loss = world.mean(stats["loss"])
            row = {
                "step": self.state.step,
                "epoch": self.state.epoch,
                "loss": loss,
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": stats["grad_norm"],
                "lists_per_s": stats["lists"] * world.size / elapsed,
                "texts_per_s": stats["texts"] * world.size / elapsed,
            }
            self._log(row)
            bar.set_postfix(loss=f"{loss:.4f}", texts_s=f"{row['texts_per_s']:.0f}")
            bar.update(1)
            last_step = self.state.step == self.total_steps
            if self.dev_lists and (
                last_step or (config.eval_every and self.state.step % config.eval_every == 0)
            ):
                self._evaluate()
            if last_step or self.state.step % config.save_every == 0:
                self._save_last()
        bar.close()
        if world.is_main:
            log.info("trained %d steps in %.1fs", self.state.step, time.perf_counter() - started)
        return self._finish()

    def _evaluate(self) -> None:
        """Dev metrics on rank 0; a better pairwise accuracy saves ``best/``."""
        if self.world.is_main:
            metrics = evaluate_lists(self.rm, self.dev_lists, self.config.eval_batch_size)
            self._log({"step": self.state.step, **{f"dev_{k}": v for k, v in metrics.items()}})
            tqdm.write(
                f"step {self.state.step}: dev pairwise accuracy "
                f"{metrics['pairwise_accuracy']:.4f}, exact order "
                f"{metrics['exact_order_accuracy']:.4f}"
            )
            if metrics["pairwise_accuracy"] > self.state.best_accuracy:
                self.state.best_accuracy = metrics["pairwise_accuracy"]
                self.state.best_step = self.state.step
                save_checkpoint(
                    self.rm,
                    self.out / "best",
                    {"eval_metrics.json": {"step": self.state.step, **metrics}},
                )
        self.world.barrier()

    def _save_last(self) -> None:
        if self.world.is_main:
            training_state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(),
            }
            save_checkpoint(
                self.rm,
                self.out / "last",
                {STATE_FILE: asdict(self.state), OPTIMIZER_FILE: training_state},
            )
        self.world.barrier()

    def _restore(self, folder: Path) -> None:
        state = json.loads((folder / STATE_FILE).read_text())
        self.state = TrainState(**state)
        saved = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        best = self.out / "best" / "eval_metrics.json"
        if best.is_file():  # best/ may be newer than last/ if the run died in between
            metrics = json.loads(best.read_text())
            if metrics["pairwise_accuracy"] > self.state.best_accuracy:
                self.state.best_accuracy = metrics["pairwise_accuracy"]
                self.state.best_step = metrics["step"]
        if self.world.is_main:
            log.info("resumed from %s at step %d", folder, self.state.step)

    def _log(self, row: dict[str, Any]) -> None:
        if self.world.is_main:
            with self.metrics_file.open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    def _trim_metrics(self) -> None:
        """On resume, drop lines a killed run logged after its last checkpoint (and a last
        line it was killed in the middle of writing)."""
        if not self.metrics_file.exists():
            return
        kept = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row["step"] <= self.state.step:
                kept.append(line)
        self.metrics_file.write_text("".join(row + "\n" for row in kept))

    def _finish(self) -> TrainResult:
        best, last = self.out / "best", self.out / "last"
        plot = self.out / "training.png"
        best_metrics: dict[str, float] = {}
        if self.world.is_main:
            if not self.dev_lists:  # nothing to select on: the final model is the best
                save_checkpoint(self.rm, best)
            else:
                best_metrics = json.loads((best / "eval_metrics.json").read_text())
            plot_metrics(self.metrics_file, plot)
        self.world.barrier()
        return TrainResult(best, last, self.metrics_file, plot, self.state.step, best_metrics)


def train(config: TrainConfig) -> TrainResult:
    """Run training as configured (as one process of a torchrun world, if launched so)."""
    world = init_world()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        return Trainer(config, world).fit()
    finally:
        close_world(world)
