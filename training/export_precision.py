"""The export's precision step: an int8 (from the raw graph) or fp16 (from the fp32 one)
model, measured against fp32 on held-out lists and refused if it misses the bars."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from rankrm.runtime import OnnxRewardModel
from training.data import RankingList
from training.errors import ExportCheckError, ExportError
from training.evaluate import ranking_metrics, split_per_list
from training.export_checks import (
    Text,
    batch_variation,
    compare,
    sample_texts,
    scored,
    summarize,
    texts_of,
    throughput,
)
from training.onnx_files import copy_onnx, remove_onnx, save_onnx
from training.quantize import HALF_SCHEME, SCHEME, half_precision, quantize_per_token

log = logging.getLogger("rankrm.export")

INVARIANCE_IN_STD = 1e-3  # int8 and fp16: in reward standard deviations
MAX_ACCURACY_DROP = 0.005  # int8 and fp16: held-out pairwise accuracy, absolute


@dataclass(frozen=True)
class Lowered:
    """What the step measured (the manifest's ``quantization``) and the model it made."""

    report: dict[str, Any]
    model: OnnxRewardModel


def _write(kind: str, source: Path, out: Path, optimize: Callable[[Path, Path], bool]) -> int:
    """Write the lower-precision graph at ``out``; returns the nodes quantised (int8)."""
    if kind == "fp16":
        save_onnx(half_precision(onnx.load(str(source))), out)
        return 0
    model, count = quantize_per_token(onnx.load(str(source)))
    quantized_raw = out.with_suffix(".raw.onnx")
    save_onnx(model, quantized_raw)
    if not optimize(quantized_raw, out):
        copy_onnx(quantized_raw, out)
    remove_onnx(quantized_raw)
    return count


def _problems(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["batch_invariance_in_std"] > INVARIANCE_IN_STD:
        problems.append(
            f"rewards change with batch composition by "
            f"{report['batch_invariance_in_std']:.2e} std (> 1e-3)"
        )
    drop = report["pairwise_accuracy_fp32"] - report["pairwise_accuracy_low"]
    if drop > MAX_ACCURACY_DROP:
        problems.append(f"held-out pairwise accuracy drops by {100 * drop:.2f} points (> 0.5)")
    return problems


def lower_precision(
    kind: str,
    source: Path,
    out: Path,
    *,
    session: Callable[[Path], OnnxRewardModel],
    optimize: Callable[[Path, Path], bool],
    fp32: OnnxRewardModel,
    ref_texts: list[Text],
    check: list[Text],
    dev: list[RankingList],
    force: bool,
    seed: int,
) -> Lowered:
    """Make the ``kind`` (int8 or fp16) model at ``out`` and measure it against ``fp32``:
    batch invariance, reward change, held-out pairwise accuracy, speed. Refused with
    ExportCheckError when it misses the bars, unless ``force``."""
    if not dev:
        raise ExportError(
            f"{kind} export needs held-out lists to measure against fp32: pass "
            "--eval FILE (default: the run's dev file)"
        )
    count = _write(kind, source, out, optimize)
    low = session(out)
    sample = sample_texts(ref_texts, 512, seed)
    reward_std = float(fp32.raw_scores([p for p, _ in sample], [r for _, r in sample]).std())
    variation = batch_variation(low, check, seed)
    dev_texts = texts_of(dev)
    dev_fp32, dev_low = scored(fp32, dev_texts), scored(low, dev_texts)
    acc_fp32 = ranking_metrics(dev, split_per_list(dev, dev_fp32))["pairwise_accuracy"]
    acc_low = ranking_metrics(dev, split_per_list(dev, dev_low))["pairwise_accuracy"]
    speed_fp32, speed_low = throughput(fp32, check), throughput(low, check)
    report: dict[str, Any] = {
        "scheme": HALF_SCHEME if kind == "fp16" else SCHEME,
        "dtype": "float16" if kind == "fp16" else "int8",
        "quantized_nodes": count,
        "held_out": f"{len(dev)} lists, {len(dev_texts)} texts",
        "reward_std": reward_std,
        "batch_invariance_max_abs": variation,
        "batch_invariance_in_std": variation / reward_std,
        "pairwise_accuracy_fp32": acc_fp32,
        "pairwise_accuracy_low": acc_low,
        "pairwise_accuracy_change": acc_low - acc_fp32,
        **compare(dev_fp32, dev_low, reward_std),
        "texts_per_s_fp32": speed_fp32,
        "texts_per_s_low": speed_low,
        "speedup": speed_low / speed_fp32,
    }
    if kind == "fp16":  # measured on this machine's provider: its point is the GPU
        report["measured_on"] = ",".join(low.session.get_providers())
    problems = _problems(report)
    # The manifest names the figures after the precision (pairwise_accuracy_int8, ...).
    for key in ("pairwise_accuracy_low", "texts_per_s_low"):
        report[key.replace("low", kind)] = report.pop(key)
    report["meets_bars"] = not problems
    report["problems"] = problems
    floats = {k: v for k, v in report.items() if isinstance(v, float)}
    log.info("%s against fp32: %s", kind, summarize(floats))
    if problems and not force:
        raise ExportCheckError(
            f"{kind} model refused: "
            + "; ".join(problems)
            + " (export fp32, or pass --force to write it flagged)"
        )
    return Lowered(report, low)
