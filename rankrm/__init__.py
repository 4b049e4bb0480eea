"""rankrm: reward models trained from human ranking lists, exported to ONNX, served fast.

One import root for users. Nothing heavy loads at ``import rankrm``: each public name
below is imported from its module on first use (PEP 562), so the client never pulls the
web stack and nothing but the training names pulls torch.

    from rankrm import RewardClient
    client = RewardClient("http://localhost:8000")
    client.score(["a text"])

=====================  ===========================================================
the service's client   RewardClient, AsyncRewardClient, RewardServiceError
the encoding contract  EncodingSpec, configure_tokenizer, encode, encode_conversation
an exported model      load_manifest, Manifest, ManifestError, OnnxRewardModel
training (torch)       TrainConfig, train, load_lists, ExportConfig, export_model
=====================  ===========================================================
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "RewardClient": "rankrm.client",
    "AsyncRewardClient": "rankrm.client",
    "RewardServiceError": "rankrm.client",
    "EncodingSpec": "rankrm.encoding",
    "configure_tokenizer": "rankrm.encoding",
    "encode": "rankrm.encoding",
    "encode_conversation": "rankrm.encoding",
    "load_manifest": "rankrm.manifest",
    "Manifest": "rankrm.manifest",
    "ManifestError": "rankrm.manifest",
    "OnnxRewardModel": "rankrm.runtime",
    # The training side: the one way up from the shared core, besides the CLI's commands.
    "TrainConfig": "training.config",
    "train": "training.train",
    "load_lists": "training.data",
    "ExportConfig": "training.export",
    "export_model": "training.export",
}
__all__ = [
    "AsyncRewardClient",
    "EncodingSpec",
    "ExportConfig",
    "Manifest",
    "ManifestError",
    "OnnxRewardModel",
    "RewardClient",
    "RewardServiceError",
    "TrainConfig",
    "__version__",
    "configure_tokenizer",
    "encode",
    "encode_conversation",
    "export_model",
    "load_lists",
    "load_manifest",
    "train",
]

if TYPE_CHECKING:
    from rankrm.client import AsyncRewardClient, RewardClient, RewardServiceError
    from rankrm.encoding import EncodingSpec, configure_tokenizer, encode, encode_conversation
    from rankrm.manifest import Manifest, ManifestError, load_manifest
    from rankrm.runtime import OnnxRewardModel
    from training.config import TrainConfig
    from training.data import load_lists
    from training.export import ExportConfig, export_model
    from training.train import train


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rankrm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
