"""Rated texts (``LABEL<TAB>TEXT`` or ``{"text", "score"}``) turned into ranking lists of
texts with distinct labels (``--format rated``)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.lists import DataError, RankingList, check_fields, optional_string, string_field
from training.sources import BadRecord, is_number, json_records, tsv_lines


@dataclass(frozen=True)
class RatedText:
    """A text with a numeric label (higher is better) and an optional prompt."""

    text: str
    score: float
    prompt: str | None = None


def read_rated(path: Path | str, skip_bad: bool = False) -> list[RatedText]:
    """Rated texts of a ``LABEL<TAB>TEXT`` or ``{"text", "score"}`` file, as they are."""
    path = Path(path)

    def fail(where: str, problem: str) -> None:
        if not skip_bad:
            raise DataError(path, where, problem)

    return read_rated_file(path, fail)


def read_rated_file(path: Path, fail: Any) -> list[RatedText]:
    texts: list[RatedText] = []
    if path.suffix.lower() in (".json", ".jsonl"):
        for where, record in json_records(path):
            if isinstance(record, BadRecord):
                fail(where, str(record))
                continue
            try:
                texts.append(rated_record(record))
            except (ValueError, TypeError) as exc:
                fail(where, str(exc))
        return texts
    for where, cols in tsv_lines(path):
        if isinstance(cols, BadRecord):
            fail(where, str(cols))
            continue
        if len(cols) != 2:
            fail(where, f"{len(cols)} column(s): expected LABEL<TAB>TEXT")
            continue
        if not is_number(cols[0]):
            fail(where, f"label {cols[0]!r} is not a number")
            continue
        if not cols[1].strip():
            fail(where, "empty text")
            continue
        texts.append(RatedText(cols[1], float(cols[0])))
    return texts


def rated_record(record: Any) -> RatedText:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    score_field = "score" if "score" in record else "label"
    check_fields(record, {"text", score_field, "prompt", "id"}, "rated text")
    if "text" not in record or score_field not in record:
        raise ValueError("a rated record needs 'text' and 'score' (or 'label')")
    text = string_field(record["text"], "text")
    if not text.strip():
        raise ValueError("empty text")
    score = record[score_field]
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise ValueError(f"field {score_field!r} must be a number, got {score!r}")
    return RatedText(text, float(score), optional_string(record.get("prompt")))


def lists_from_rated(
    texts: Sequence[RatedText], *, list_size: int, seed: int, lists_per_text: int = 1
) -> list[RankingList]:
    """Build ranking lists of texts with distinct labels, ordered by label, reproducibly.

    Texts are grouped by prompt. Each text anchors ``lists_per_text`` lists; the other
    members are drawn from distinct labels other than the anchor's (labels chosen
    uniformly, then a text uniformly within the label), so every label pair is seen.
    Lists hold ``min(list_size, labels in the group)`` texts. Same ``seed``, same lists.
    """
    if list_size < 2:
        raise ValueError(f"list_size must be at least 2, got {list_size}")
    rng = random.Random(seed)
    groups: dict[str | None, dict[float, list[str]]] = defaultdict(lambda: defaultdict(list))
    for item in texts:
        groups[item.prompt][item.score].append(item.text)
    lists: list[RankingList] = []
    for prompt in sorted(groups, key=lambda p: (p is not None, p or "")):
        by_label = {label: sorted(set(members)) for label, members in groups[prompt].items()}
        labels = sorted(by_label)
        if len(labels) < 2:
            continue
        size = min(list_size, len(labels))
        anchors = [(text, label) for label in labels for text in by_label[label]]
        for _ in range(lists_per_text):
            rng.shuffle(anchors)
            for text, label in anchors:
                others = rng.sample([other for other in labels if other != label], size - 1)
                members = [(label, text)] + [(lab, rng.choice(by_label[lab])) for lab in others]
                members.sort(key=lambda m: -m[0])
                responses = [m[1] for m in members]
                if len(set(responses)) < len(responses):
                    continue  # the same sentence under two labels: no honest order
                lists.append(RankingList.ordered(prompt, responses))
    return lists
