"""training/rated.py: rated texts into ranking lists of distinct labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import jsonl, rated_tsv, write
from training.data import (
    DataError,
    RatedText,
    lists_from_rated,
    load_lists,
)


def test_rated_tsv_builds_ordered_lists_of_distinct_labels(tmp_path: Path) -> None:
    lists = load_lists(rated_tsv(tmp_path), list_size=4, seed=1).lists
    assert len(lists) == 20  # one list anchored on each text
    for lst in lists:
        labels = [int(r.split()[1]) for r in lst.responses]
        assert len(lists[0].responses) == 4
        assert labels == sorted(set(labels), reverse=True)  # distinct, best (highest) first


def test_rated_lists_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    f = rated_tsv(tmp_path)
    assert load_lists(f, seed=3).lists == load_lists(f, seed=3).lists
    assert load_lists(f, seed=3).lists != load_lists(f, seed=4).lists


def test_rated_list_size_is_capped_by_distinct_labels() -> None:
    texts = [RatedText("a", 1), RatedText("b", 2), RatedText("c", 2)]
    lists = lists_from_rated(texts, list_size=5, seed=0, lists_per_text=2)
    assert len(lists) == 6
    assert all(len(lst.responses) == 2 and lst.responses[0] in "bc" for lst in lists)


def test_rated_jsonl_groups_by_prompt(tmp_path: Path) -> None:
    f = jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "p1", "text": "a", "score": 0.5},
            {"prompt": "p1", "text": "b", "score": 2.5},
            {"prompt": "p2", "text": "c", "score": 1},
            {"prompt": "p2", "text": "d", "score": 1},  # one label only: no list for p2
        ],
    )
    lists = load_lists(f, list_size=3).lists
    assert {lst.prompt for lst in lists} == {"p1"}
    assert all(lst.responses == ("b", "a") for lst in lists)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("1\tgood\nlonely\n", "2: 1 column(s)"),
        ("1\tgood\n2\t \n", "2: empty text"),
        ("1\tgood\n2\tfine\textra\n", "2: 3 column(s): expected LABEL<TAB>TEXT"),
    ],
)
def test_rated_tsv_malformed(tmp_path: Path, content: str, problem: str) -> None:
    f = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as info:
        load_lists(f, "rated")
    assert problem in str(info.value)


def test_rated_label_must_be_number(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.tsv", "1\tgood\nhigh\tbad label\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: label 'high' is not a number"):
        load_lists(f, "rated")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"text": "a", "score": "high"}, "must be a number"),
        ({"text": "a", "score": 1, "lang": "en"}, "unknown field(s) ['lang']"),
        ({"text": "", "score": 1}, "empty text"),
    ],
)
def test_rated_jsonl_malformed(tmp_path: Path, record: Any, problem: str) -> None:
    f = jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "score": 1}, record])
    with pytest.raises(DataError) as info:
        load_lists(f, "rated")
    assert str(info.value).startswith(f"{f}:2: ") and problem in str(info.value)


def test_rated_needs_two_labels(tmp_path: Path) -> None:
    f = write(tmp_path / "one.tsv", "1\ta\n1\tb\n")
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        load_lists(f, "rated")


# ----------------------------------------------------------------------- detection, splits
