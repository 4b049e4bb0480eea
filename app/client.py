"""Moved: the clients are ``rankrm.client`` (``from rankrm import RewardClient``), part of
the torch-free core. This module re-exports them for code written before the move and
warns; it will be removed."""

from __future__ import annotations

import warnings

from rankrm.client import AsyncRewardClient, RewardClient, RewardServiceError

__all__ = ["AsyncRewardClient", "RewardClient", "RewardServiceError"]

warnings.warn(
    "app.client moved to rankrm.client: use `from rankrm import RewardClient, "
    "AsyncRewardClient` (app.client will be removed)",
    DeprecationWarning,
    stacklevel=2,
)
