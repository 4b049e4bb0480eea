"""ONNX files of any size: one ``.onnx`` file, plus one ``<name>.data`` file of weights when
the model is too big for a single protobuf (2 GiB is protobuf's hard limit).

torch's exporter writes a model over 2 GiB as one file per tensor next to the graph;
:func:`consolidate` gathers them into the layout above, which every later step keeps:
onnxruntime reads the weights file from beside the graph, and the manifest checksums both.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

# Weights go to a separate file above this size: under protobuf's 2 GiB with room for the
# graph itself and for the copies the optimizer and quantizer make.
EXTERNAL_OVER = 1 << 30


def data_file(path: Path) -> Path:
    """Where the weights of the model at ``path`` go when they are stored apart."""
    return path.with_name(path.name + ".data")


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers held in ``model`` (loaded, not external)."""
    return sum(len(t.raw_data) for t in model.graph.initializer)


def needs_external(model: onnx.ModelProto) -> bool:
    """Whether ``model`` must keep its weights in a separate file."""
    return weight_bytes(model) > EXTERNAL_OVER


def external_files(path: Path) -> list[Path]:
    """The files (beside ``path``) that the model at ``path`` reads weights from."""
    model = onnx.load(str(path), load_external_data=False)
    names = {
        ExternalDataInfo(tensor).location
        for tensor in model.graph.initializer
        if uses_external_data(tensor)
    }
    return sorted(path.parent / name for name in names)


def save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write ``model`` (weights loaded) to ``path``, its weights apart when it is big.
    Returns the files written."""
    data = data_file(path)
    data.unlink(missing_ok=True)
    if not needs_external(model):
        onnx.save_model(model, str(path))
        return [path]
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    return [path, data]


def consolidate(path: Path) -> list[Path]:
    """Rewrite the model at ``path`` in the one-file-or-two layout, removing the per-tensor
    files an exporter may have scattered beside it. Returns the files of the model."""
    scattered = external_files(path)
    if not scattered:
        return [path]
    model = onnx.load(str(path))  # with its weights
    for file in scattered:
        file.unlink()
    return save_onnx(model, path)


def move_onnx(src: Path, dst: Path) -> list[Path]:
    """Move a model (and its weights file, renamed to match) from ``src`` to ``dst``."""
    data_file(dst).unlink(missing_ok=True)
    if not external_files(src):
        src.replace(dst)
        return [dst]
    files = save_onnx(onnx.load(str(src)), dst)
    remove_onnx(src)
    return files


def copy_onnx(src: Path, dst: Path) -> list[Path]:
    """Copy a model (and its weights file) from ``src`` to ``dst``."""
    return save_onnx(onnx.load(str(src)), dst)


def remove_onnx(path: Path) -> None:
    """Delete a model and the weights file beside it, if any."""
    if path.is_file():
        for file in external_files(path):
            file.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
