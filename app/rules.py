"""Rule-based rewards: a user's Python function, combined with the model's reward.

``--reward-fn module:function`` (or ``path/to/file.py:function``) names a function

    def reward(prompt: str | None, response: str, label: Any) -> float | None

called once per ``/get_reward`` sample with the sample's prompt (OpenRLHF's ``prompts[i]``),
the response scored (the policy's answer) and its label (``labels[i]``, e.g. a math
answer). It runs in worker threads, off the event loop, each call bounded by
``reward_fn_timeout_s``; None means "no rule reward for this sample". A call that raises,
times out or returns something other than a finite number is that sample's error
(reported per sample), never the request's; the sample keeps its model reward.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.priority import background_executor

RewardFn = Callable[[str | None, str, Any], float | None]


def load_function(spec: str) -> RewardFn:
    """The function ``spec`` names: ``package.module:function`` or ``file.py:function``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"reward_fn {spec!r}: expected module:function or file.py:function")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"reward_fn {spec!r}: {path} not found")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as exc:  # importing the user's module ran their code
        raise ValueError(f"reward_fn {spec!r}: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"reward_fn {spec!r}: {where} has no function {name!r}")
    return func  # type: ignore[no-any-return]


@dataclass
class RuleReward:
    """A loaded reward function, its weight in the reward, and where it runs."""

    func: RewardFn
    weight: float
    timeout_s: float
    executor: ThreadPoolExecutor

    @classmethod
    def load(cls, spec: str, weight: float, timeout_s: float, nice: int) -> RuleReward:
        return cls(
            load_function(spec), weight, timeout_s, background_executor(nice, 4, "rankrm-rules")
        )

    async def score(
        self, prompts: Sequence[str | None], responses: Sequence[str], labels: Sequence[Any]
    ) -> list[tuple[float | None, str | None]]:
        """Each sample's rule reward (None: none) and its error (None: none)."""
        loop = asyncio.get_running_loop()

        async def one(
            prompt: str | None, response: str, label: Any
        ) -> tuple[float | None, str | None]:
            call = loop.run_in_executor(self.executor, self.func, prompt, response, label)
            try:
                value = await asyncio.wait_for(call, self.timeout_s)
            except TimeoutError:
                return None, f"the reward function took longer than {self.timeout_s:g}s"
            except Exception as exc:  # the user's code: any failure is this sample's
                return None, f"the reward function raised {type(exc).__name__}: {exc}"
            if value is None:
                return None, None
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                return None, f"the reward function returned {value!r}, not a finite number"
            return float(value), None

        return await asyncio.gather(
            *(one(p, r, lab) for p, r, lab in zip(prompts, responses, labels, strict=True))
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
