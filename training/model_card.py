"""The ``README.md`` model card written next to an exported model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankrm.manifest import Manifest
from training.losses import DESCRIPTIONS

SANITY = [
    (None, "This movie was wonderful: moving, funny and beautifully acted."),
    (None, "A dull, lifeless mess of a film; I wanted my two hours back."),
]

_METRIC_NAMES = {
    "pairwise_accuracy": "pairwise accuracy (ordered pairs of lists)",
    "all_pairs_accuracy": "pairwise accuracy (all pairs of texts with different labels)",
    "polar_pairs_accuracy": "pairwise accuracy, two lowest labels vs two highest",
    "exact_order_accuracy": "exact-order accuracy (whole lists)",
    "kendall_tau": "mean Kendall tau",
    "mean_margin": "mean margin (better - worse)",
    "reward_mean": "reward mean",
    "reward_std": "reward std",
}


def _what(run: dict[str, Any]) -> str:
    """The card's first sentence: how the model came to be."""
    if not run:
        return "A reward model from elsewhere, exported to ONNX by rankrm."
    loss = str(run.get("loss", "pairwise"))
    return (
        f"A reward model trained by rankrm from ranking lists ({DESCRIPTIONS.get(loss, loss)}), "
        "exported to ONNX."
    )


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for split in ("dev", "test"):
        entry = evaluation.get(split)
        if not entry:
            continue
        columns = [c for c in ("exported", "fp32") if c in entry]
        lines += [
            f"**{split}** (`{entry['file']}`)",
            "",
            "| metric | " + " | ".join(columns) + " |",
            "| --- |" + " --- |" * len(columns),
        ]
        for key, label in _METRIC_NAMES.items():
            if key in entry[columns[0]]:
                values = " | ".join(f"{entry[c][key]:.4f}" for c in columns)
                lines.append(f"| {label} | {values} |")
        lines.append("")
    return lines or ["No evaluation data was given to the export.", ""]


def write_model_card(
    folder: Path,
    manifest: Manifest,
    run: dict[str, Any],
    command: str,
    sanity_rewards: Sequence[float],
) -> None:
    """Write ``folder/README.md`` from the manifest, the run's configuration and the command
    that made it, and the exported model's rewards of the :data:`SANITY` texts."""
    rewards = sanity_rewards
    q = manifest.quantization
    norm = manifest.normalization
    lines = [
        f"# {manifest.name}",
        "",
        _what(run),
        "",
        "## Model",
        "",
        f"- backbone: `{manifest.backbone.get('name')}` ({manifest.backbone.get('model_type')}, "
        f"{manifest.backbone.get('parameters'):,} parameters), pooling `{manifest.pooling}`",
        f"- input: `(prompt, response)` pair encoding, max {manifest.max_length} tokens, "
        f"truncated from the {manifest.truncation_side}",
        f"- weights: {q.get('scheme')} ({q.get('dtype')})",
        f"- reward normalisation: `(raw - {norm.offset:.4f}) / {norm.scale:.4f}` "
        f"(mean over {norm.reference_texts} texts of `{norm.reference}`)",
        "",
        "## Training",
        "",
        f"Data: `{run.get('train_file', 'unknown')}` (dev: `{run.get('dev_file')}`).",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Evaluation",
        "",
        *_metrics_table(manifest.evaluation),
    ]
    if q.get("scheme") != "none":
        kind = "fp16" if q.get("dtype") == "float16" else "int8"
        lines += [
            "## Quantisation against fp32",
            "",
            f"Held-out: {q['held_out']}. Speed-up {q['speedup']:.2f}x "
            f"({q['texts_per_s_fp32']:.0f} -> {q[f'texts_per_s_{kind}']:.0f} texts/s at batch 32"
            f"{', on ' + q['measured_on'] if 'measured_on' in q else ''}); "
            f"reward change max {q['max_change_in_std']:.3f} / mean {q['mean_change_in_std']:.4f} "
            f"reward std; Spearman {q['spearman']:.5f}; pairwise accuracy "
            f"{q['pairwise_accuracy_fp32']:.4f} -> {q[f'pairwise_accuracy_{kind}']:.4f}; "
            f"batch invariance {q['batch_invariance_max_abs']:.2e} "
            f"({'meets' if q['meets_bars'] else 'MISSES'} the bars).",
            "",
        ]
    lines += [
        "## Sanity check",
        "",
        "| text | reward |",
        "| --- | --- |",
        *[f"| {t} | {r:+.3f} |" for (_, t), r in zip(SANITY, rewards, strict=True)],
        "",
        "## Intended use and limits",
        "",
        "- Intended: scoring English responses for RLHF (PPO/GRPO rewards, best-of-n and "
        "rejection sampling) and ranking texts, through the rankrm service.",
        "- The reward reflects what the training lists rewarded (for SST-5: positive "
        "sentiment of movie-review sentences), nothing more: it is not a general quality or "
        "safety judge. Expect reward hacking if a policy is optimised against it for long.",
        "- The backbone's vocabulary is English and uncased: other languages (Chinese in "
        "particular) become mostly unknown tokens.",
        f"- Inputs beyond {manifest.max_length} tokens are truncated.",
        "",
        "## Files",
        "",
        *[f"- `{name}`: sha256 `{digest}`" for name, digest in manifest.files.items()],
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines))
