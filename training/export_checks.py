"""What an export must show before it is declared good: parity, batch invariance,
loading without torch, and (for int8) quality and speed against the fp32 model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from rankrm.runtime import OnnxRewardModel
from training.data import RankingList
from training.errors import ExportCheckError

Text = tuple[str | None, str]  # (prompt, response)


def sample_texts(texts: Sequence[Text], n: int, seed: int) -> list[Text]:
    """``n`` texts spread over the length range (shortest to longest), reproducibly."""
    unique = sorted(set(texts), key=lambda t: (len(t[0] or "") + len(t[1]), t[1]))
    if len(unique) <= n:
        return unique
    step = len(unique) / n
    picked = [unique[int(i * step)] for i in range(n)]
    random.Random(seed).shuffle(picked)
    return picked


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference."""
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def batch_variation(model: OnnxRewardModel, texts: Sequence[Text], seed: int) -> float:
    """Largest change of a text's reward between scoring it alone and inside padded batches
    of 8 and 32 whose other members are of very different lengths."""
    rng = random.Random(seed)
    encodings = model.encode([p for p, _ in texts], [r for _, r in texts])
    alone = np.array([model.run_encodings([e])[0] for e in encodings])
    by_length = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    worst = 0.0
    for size in (8, 32):
        for i in range(len(texts)):
            # Mates from the opposite end of the length range, so padding is heavy.
            pool = by_length[::-1] if len(encodings[i].ids) < 16 else by_length
            mates = [j for j in pool if j != i][: size - 1]
            members = [i, *mates]
            rng.shuffle(members)
            scores = model.run_encodings([encodings[j] for j in members])
            worst = max(worst, abs(float(scores[members.index(i)]) - float(alone[i])))
    return worst


def throughput(model: OnnxRewardModel, texts: Sequence[Text], seconds: float = 3.0) -> float:
    """Texts per second at batch 32 over ``texts`` (grouped by length), after a warm-up."""
    prompts, responses = [p for p, _ in texts], [r for _, r in texts]
    model.raw_scores(prompts, responses)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.raw_scores(prompts, responses)
        done += len(texts)
    return done / (time.perf_counter() - start)


def compare(reference: np.ndarray, candidate: np.ndarray, reward_std: float) -> dict[str, float]:
    """How far ``candidate`` rewards are from ``reference`` (raw and in reward std units)."""
    diff = np.abs(candidate - reference)
    return {
        "max_abs_change": float(diff.max()),
        "mean_abs_change": float(diff.mean()),
        "max_change_in_std": float(diff.max() / reward_std),
        "mean_change_in_std": float(diff.mean() / reward_std),
        "spearman": float(spearmanr(reference, candidate).statistic),
    }


_NO_TORCH_PROBE = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is not available to the service")
        return None
sys.meta_path.insert(0, Block())
from rankrm.runtime import OnnxRewardModel
texts = json.loads(sys.stdin.read())
model = OnnxRewardModel.load(sys.argv[1])
scores = model.raw_scores([t[0] for t in texts], [t[1] for t in texts])
print(json.dumps([float(s) for s in scores]))
"""


def load_without_torch(folder: Path, texts: Sequence[Text]) -> np.ndarray:
    """Load and score ``folder`` in a fresh interpreter where torch cannot be imported."""
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_PROBE, str(folder)],
        input=json.dumps(list(texts)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise ExportCheckError(
            f"the exported model does not load with the service's dependencies alone:\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return np.array(json.loads(result.stdout), dtype=np.float32)


def summarize(values: dict[str, Any]) -> str:
    """One line of ``key=value`` for logs."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def texts_of(lists: Sequence[RankingList]) -> list[Text]:
    """Every (prompt, response) of ``lists``, in order, duplicates kept."""
    return [(lst.prompt, r) for lst in lists for r in lst.responses]


def scored(model: OnnxRewardModel, texts: Sequence[Text]) -> np.ndarray:
    """Normalised rewards of ``texts``, each distinct text scored once."""
    unique = list(dict.fromkeys(texts))
    raw = model.raw_scores([p for p, _ in unique], [r for _, r in unique])
    by_text = dict(zip(unique, model.normalize(raw), strict=True))
    return np.array([by_text[t] for t in texts], dtype=np.float32)
