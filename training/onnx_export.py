"""torch -> ONNX for any Hugging Face sequence-classification reward model.

The graph takes ``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` only if the
model uses them), with dynamic batch and sequence axes, and returns ``reward`` of shape
``(batch,)``. The legacy TorchScript exporter with eager attention is used: it fuses fully
under onnxruntime's BERT optimizer (DESIGN.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import PreTrainedModel

from training.model import RewardModel, rewards_at_last_token, uses_token_types

OPSET = 17
OUTPUT_NAME = "reward"
# Encoder families whose graphs onnxruntime's transformer optimizer knows how to fuse.
OPTIMIZABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert"}


class _RewardOutput(torch.nn.Module):
    """Wraps a classifier so the exported graph returns one reward per row."""

    def __init__(self, model: PreTrainedModel, token_types: bool, by_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.token_types = token_types
        self.by_mask = by_mask  # RewardModel.last_token_by_mask

    def forward(
        self,
        input_ids: torch.Tensor,  # (N, T)
        attention_mask: torch.Tensor,  # (N, T)
        token_type_ids: torch.Tensor | None = None,  # (N, T)
    ) -> torch.Tensor:
        if self.by_mask:
            return rewards_at_last_token(self.model, input_ids, attention_mask)
        extra = {"token_type_ids": token_type_ids} if self.token_types else {}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        rewards: torch.Tensor = logits[:, 0]  # (N,)
        return rewards


def input_names(model: PreTrainedModel) -> list[str]:
    """The ONNX inputs this model needs."""
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if uses_token_types(model) else names


def pooling_of(model: PreTrainedModel) -> str:
    """How the model turns token states into one reward (recorded in the manifest)."""
    if getattr(model.config, "is_decoder", False) or model.config.model_type in {
        "llama",
        "qwen2",
        "qwen3",
        "mistral",
        "gemma",
        "gemma2",
        "phi3",
        "gpt2",
        "gpt_neox",
    }:
        return "last-non-pad-token"
    if model.config.model_type == "bert":
        return "cls-pooler"
    return "first-token"


def export_onnx(rm: RewardModel, path: Path) -> list[str]:
    """Write ``rm`` as ONNX to ``path``; returns the input names."""
    model = rm.model.eval()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    names = input_names(model)
    # Two texts of different lengths so the traced graph sees padding.
    batch = rm.batch([None, "a prompt"], ["a short text", "a somewhat longer response text"])
    args = tuple(batch[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript exporter narrates its tracing (TracerWarning etc.): not our errors.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _RewardOutput(model, "token_type_ids" in names, rm.last_token_by_mask),
            args,
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return names


def optimize_onnx(src: Path, dst: Path, model: PreTrainedModel) -> bool:
    """Fuse attention, layer norms and GELU with onnxruntime's transformer optimizer.

    Returns False (and writes nothing) for architectures the optimizer does not cover.
    """
    model_type = OPTIMIZABLE.get(model.config.model_type)
    if model_type is None:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(src),
        model_type=model_type,
        num_heads=model.config.num_attention_heads,
        hidden_size=model.config.hidden_size,
    )
    optimized.save_model_to_file(str(dst))
    return True
