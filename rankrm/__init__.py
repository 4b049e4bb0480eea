"""rankrm: reward models trained from human ranking lists, exported to ONNX, served fast.

This package holds what training and serving share and the command line. It imports
neither torch nor the web stack at import time: the public names below load on first use.

    from rankrm import RewardClient
    client = RewardClient("http://localhost:8000")
    client.score(["a text"])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "RewardClient": "rankrm.client",
    "AsyncRewardClient": "rankrm.client",
    "RewardServiceError": "rankrm.client",
}
__all__ = ["AsyncRewardClient", "RewardClient", "RewardServiceError", "__version__"]

if TYPE_CHECKING:
    from rankrm.client import AsyncRewardClient, RewardClient, RewardServiceError


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'rankrm' has no attribute {name!r}")
