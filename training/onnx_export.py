"""torch -> ONNX for any Hugging Face sequence-classification reward model.

The graph takes ``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` only if the
model uses them), with dynamic batch and sequence axes, and returns ``reward`` of shape
``(batch,)``; a model with a multi-output head also returns ``heads`` of shape
``(batch, outputs)``, every output of which ``reward`` is the weighted sum. The legacy
TorchScript exporter with eager attention is used: it fuses fully under onnxruntime's BERT
optimizer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import PreTrainedModel

from training.model import RewardModel, uses_token_types
from training.onnx_files import consolidate, needs_external

OPSET = 17
OUTPUT_NAME = "reward"
HEADS_NAME = "heads"
# Encoder families whose graphs onnxruntime's transformer optimizer knows how to fuse.
OPTIMIZABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert"}


class _RewardOutput(torch.nn.Module):
    """Wraps a reward model so the exported graph returns one reward per row, read as
    ``RewardModel.rewards`` reads it."""

    def __init__(self, rm: RewardModel, token_types: bool) -> None:
        super().__init__()
        self.model = rm.model  # a submodule, so tracing sees its weights
        self.rm = rm
        self.token_types = token_types

    def forward(
        self,
        input_ids: torch.Tensor,  # (N, T)
        attention_mask: torch.Tensor,  # (N, T)
        token_type_ids: torch.Tensor | None = None,  # (N, T)
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_types:
            assert token_type_ids is not None
            inputs["token_type_ids"] = token_type_ids
        if not self.rm.heads:
            return self.rm.rewards(inputs)  # (N,)
        outputs = self.rm.outputs(inputs)  # (N, H)
        weights = torch.tensor(self.rm.head_weights, dtype=outputs.dtype)  # (H,)
        return outputs @ weights, outputs


def input_names(model: PreTrainedModel) -> list[str]:
    """The ONNX inputs this model needs."""
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if uses_token_types(model) else names


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
    outputs = [OUTPUT_NAME, HEADS_NAME] if rm.heads else [OUTPUT_NAME]
    if rm.heads:
        axes[HEADS_NAME] = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript exporter narrates its tracing (TracerWarning etc.): not our errors.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _RewardOutput(rm, "token_type_ids" in names),
            args,
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    consolidate(path)  # over 2 GiB, torch writes one file per tensor: gather them
    return names


def optimize_onnx(
    src: Path, dst: Path, model: PreTrainedModel, *, skip_layer_norm: bool = False
) -> bool:
    """Fuse attention, layer norms and GELU with onnxruntime's transformer optimizer
    (residual + layer norm into one SkipLayerNormalization only with ``skip_layer_norm``).

    Returns False (and writes nothing) for architectures the optimizer does not cover.
    """
    model_type = OPTIMIZABLE.get(model.config.model_type)
    if model_type is None:
        return False
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(model_type)
    # The fused residual + layer norm is never faster on CPU: it made the int8 model 12-30 %
    # slower when int8 was spelled with standard operators, and ties with the fused int8
    # operators the export writes now, as it does in fp32 (docs/benchmarks.md,
    # bench/int8_graph.py).
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    optimized = optimize_model(
        str(src),
        model_type=model_type,
        num_heads=model.config.num_attention_heads,
        hidden_size=model.config.hidden_size,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(dst), use_external_data_format=needs_external(optimized.model))
    return True
