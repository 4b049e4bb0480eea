"""Every input layout, every malformed case, and rated-list building."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import jsonl, rated_tsv, write
from training.data import (
    DataError,
    RankingList,
    detect_format,
    load_lists,
    split_dev,
)


def test_tsv_lists_best_first(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", 'best "quoted"\tmiddle\tworst\n\nx\ty\n')
    lists = load_lists(f, "tsv").lists
    assert lists[0] == RankingList(None, ('best "quoted"', "middle", "worst"), (1, 2, 3))
    assert lists[1].responses == ("x", "y")


def test_tsv_with_prompt_column(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "the question\tgood\tbad\n")
    (lst,) = load_lists(f, "tsv", has_prompt=True).lists
    assert lst.prompt == "the question"
    assert lst.responses == ("good", "bad")


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("a\tb\nonly-one\n", 2, "1 column(s): need 2 or more"),
        ("a\t\tc\n", 1, "response 1 is empty"),
        ("a\tb\tA\tb\n", 1, "responses 1 and 3 are identical"),
    ],
)
def test_tsv_malformed(tmp_path: Path, content: str, line: int, problem: str) -> None:
    f = write(tmp_path / "bad.tsv", content)
    with pytest.raises(DataError) as info:
        load_lists(f, "tsv")
    assert str(info.value).startswith(f"{f}:{line}: ")
    assert problem in str(info.value)


def test_tsv_prompt_needs_three_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.tsv", "prompt\tonly\n")
    with pytest.raises(DataError, match=r"bad.tsv:1: 2 column\(s\): need 3 or more"):
        load_lists(f, "tsv", has_prompt=True)


def test_skip_bad_reports_what_it_dropped(tmp_path: Path) -> None:
    f = write(tmp_path / "mixed.tsv", "a\tb\nlonely\nc\td\n\te\n")
    result = load_lists(f, "tsv", skip_bad=True)
    assert [lst.responses for lst in result.lists] == [("a", "b"), ("c", "d")]
    assert [(e.where, "empty" in e.problem) for e in result.skipped] == [("2", False), ("4", True)]


def test_file_with_nothing_valid_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "empty.tsv", "\n\n")
    with pytest.raises(DataError, match="no valid ranking lists"):
        load_lists(f, "tsv")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_lists(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------- JSON ranking lists


def test_jsonl_ranking_lists_with_and_without_ranks(tmp_path: Path) -> None:
    f = jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "q", "responses": ["a", "b", "c"]},
            {"responses": ["x", "y", "z"], "ranks": [2, 1, 2]},
        ],
    )
    first, second = load_lists(f).lists
    assert first == RankingList("q", ("a", "b", "c"), (1, 2, 3))
    assert second.prompt is None and second.ranks == (2, 1, 2)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"responses": ["only"]}, "at least 2 responses, got 1"),
        ({"responses": ["a", ""]}, "response 1 is empty"),
        ({"responses": ["a", "a"]}, "responses 0 and 1 are identical"),
        ({"responses": ["a", "b"], "extra": 1}, "unknown field(s) ['extra']"),
        ({"responses": ["a", "b"], "ranks": [1]}, "1 ranks for 2 responses"),
        ({"responses": ["a", "b"], "ranks": [1, 0]}, "ranks must be integers >= 1"),
        ({"responses": ["a", "b"], "ranks": [2, 2]}, "all responses are tied"),
        ({"responses": ["a", 3]}, "'responses[1]' must be a string"),
        ({"responses": "a\tb"}, "'responses' must be a list"),
        ({"prompt": "q"}, "unrecognised record"),
        (["a", "b"], "expected a JSON object"),
    ],
)
def test_json_malformed(tmp_path: Path, record: Any, problem: str) -> None:
    f = jsonl(tmp_path / "bad.jsonl", [{"responses": ["fine", "ok"]}, record])
    with pytest.raises(DataError) as info:
        load_lists(f, "json")
    assert str(info.value).startswith(f"{f}:2: ")
    assert problem in str(info.value)


def test_bad_json_line_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.jsonl", '{"responses": ["a", "b"]}\n{"responses": [\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_lists(f)


def test_bad_json_array_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.json", '[\n {"responses": ["a", "b"]},\n {"responses": ]\n]')
    with pytest.raises(DataError, match=r"bad.json:3: invalid JSON"):
        load_lists(f)


def test_json_array_error_names_item(tmp_path: Path) -> None:
    f = write(tmp_path / "a.json", json.dumps([{"responses": ["a", "b"]}, {"responses": []}]))
    with pytest.raises(DataError, match=r"a.json:item 1: a ranking list needs at least 2"):
        load_lists(f)


# ----------------------------------------------------------------------- pairwise layouts


def test_trl_string_pairs(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "yes", "rejected": "no"}])
    assert load_lists(f).lists == [RankingList("Q?", ("yes", "no"), (1, 2))]


def test_trl_conversational_with_explicit_prompt(tmp_path: Path) -> None:
    f = jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello!"}],
                "rejected": [{"role": "assistant", "content": "Go away."}],
            }
        ],
    )
    assert load_lists(f).lists == [RankingList("user: Hi", ("Hello!", "Go away."), (1, 2))]


def test_trl_conversational_implicit_prompt(tmp_path: Path) -> None:
    turn = {"role": "user", "content": "Hi"}
    f = jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "chosen": [turn, {"role": "assistant", "content": "Hello!"}],
                "rejected": [turn, {"role": "assistant", "content": "Go away."}],
            }
        ],
    )
    assert load_lists(f).lists == [RankingList("user: Hi", ("Hello!", "Go away."), (1, 2))]


def test_anthropic_hh_transcripts_split_at_shared_prefix(tmp_path: Path) -> None:
    prefix = "\n\nHuman: What is 2+2?\n\nAssistant: Let me think.\n\nHuman: And?\n\nAssistant:"
    f = jsonl(
        tmp_path / "hh.jsonl", [{"chosen": prefix + " It is 4.", "rejected": prefix + " It is 5."}]
    )
    (lst,) = load_lists(f).lists
    assert lst.prompt == prefix.strip()
    assert lst.responses == ("It is 4.", "It is 5.")


def test_sharegpt_layout_with_system(tmp_path: Path) -> None:
    f = write(
        tmp_path / "s.json",
        json.dumps(
            [
                {
                    "system": "Be kind.",
                    "conversations": [{"from": "human", "value": "Hi"}],
                    "chosen": {"from": "gpt", "value": "Hello!"},
                    "rejected": {"from": "gpt", "value": "What."},
                }
            ]
        ),
    )
    (lst,) = load_lists(f).lists
    assert lst.prompt == "system: Be kind.\n\nuser: Hi"
    assert lst.responses == ("Hello!", "What.")


def test_sharegpt_with_string_answers(tmp_path: Path) -> None:
    f = jsonl(
        tmp_path / "s.jsonl",
        [{"conversations": [{"from": "human", "value": "Hi"}], "chosen": "A", "rejected": "B"}],
    )
    assert load_lists(f).lists[0].responses == ("A", "B")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"chosen": "same", "rejected": "same"}, "identical"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "response 0 is empty"),
        ({"chosen": "a", "rejected": "b", "score": 1}, "unknown field(s) ['score']"),
        ({"chosen": 1, "rejected": "b"}, "'chosen' must be a string"),
        ({"conversations": [], "chosen": "a", "rejected": "b"}, "non-empty list of turns"),
        (
            {"conversations": [{"from": "alien", "value": "x"}], "chosen": "a", "rejected": "b"},
            "unknown message role 'alien'",
        ),
    ],
)
def test_pairwise_malformed(tmp_path: Path, record: Any, problem: str) -> None:
    f = jsonl(tmp_path / "bad.jsonl", [record])
    with pytest.raises(DataError) as info:
        load_lists(f)
    assert str(info.value).startswith(f"{f}:1: ")
    assert problem in str(info.value)


# ----------------------------------------------------------------------- rated texts


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(rated_tsv(tmp_path)) == "rated"
    assert detect_format(write(tmp_path / "l.tsv", "a\tb\tc\n")) == "tsv"
    assert detect_format(jsonl(tmp_path / "r.jsonl", [{"text": "a", "score": 1}])) == "rated"
    assert detect_format(jsonl(tmp_path / "p.jsonl", [{"chosen": "a", "rejected": "b"}])) == "json"


def test_split_dev_is_disjoint_and_reproducible() -> None:
    lists = [RankingList.ordered(None, [f"a{i}", f"b{i}"]) for i in range(20)]
    train, dev = split_dev(lists, 0.25, seed=0)
    assert len(dev) == 5 and len(train) == 15
    assert not set(dev) & set(train)
    assert split_dev(lists, 0.25, seed=0) == (train, dev)


# ----------------------------------------------------------------------- the shared real data


def test_reads_the_articles_file(shared_data: Path) -> None:
    lists = load_lists(shared_data / "seed-zh" / "dev.tsv").lists
    assert len(lists) == 3082
    assert all(len(lst.responses) == 4 for lst in lists)
    assert sum('"' in "".join(lst.responses) for lst in lists) == 676  # quotes kept verbatim


def test_reads_sst5_as_lists(shared_data: Path) -> None:
    lists = load_lists(shared_data / "sst5" / "dev.tsv", list_size=5).lists
    assert len(lists) >= 1090
    assert all(len(lst.responses) == 5 for lst in lists)


@pytest.mark.parametrize(
    ("name", "count"),
    [("dpo_en_demo.json", 300), ("dpo_zh_demo.json", 300), ("dpo_zh_500.jsonl", 500)],
)
def test_reads_the_pairwise_files(shared_data: Path, name: str, count: int) -> None:
    lists = load_lists(shared_data / "pairwise" / name).lists
    assert len(lists) == count
    assert all(lst.prompt and len(lst.responses) == 2 for lst in lists)


# ----------------------------------------------------------------------- invalid text


@pytest.mark.parametrize(
    ("name", "content", "where", "words"),
    [
        ("a.jsonl", '{"responses": ["ok", "fine"]}\n{"responses": ["a", "\\ud800"]}\n', "2",
         ["responses[1]", "lone surrogate U+D800"]),
        ("a.jsonl", '{"prompt": [{"role": "user", "content": "x\\udfffy"}], '
                    '"chosen": "a", "rejected": "b"}\n', "1", ["prompt[0].content", "U+DFFF"]),
        ("a.json", '[{"responses": ["a", "b"]},\n {"responses": ["\\udc00", "b"]}]', "item 1",
         ["responses[0]"]),
        ("r.jsonl", '{"text": "\\ud83d", "score": 1}\n', "1", ["text", "lone surrogate"]),
    ],
)  # fmt: skip
def test_lone_surrogates_in_json_name_file_and_line(
    tmp_path: Path, name: str, content: str, where: str, words: list[str]
) -> None:
    f = write(tmp_path / name, content)
    with pytest.raises(DataError) as caught:
        load_lists(f, "rated" if name.startswith("r") else "json")
    assert str(caught.value).startswith(f"{f}:{where}: ")
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    ("name", "fmt", "content", "where"),
    [
        ("a.tsv", "tsv", b"good\tbad\nfine\t\xff\xfeok\n", "2"),
        ("a.jsonl", "json", b'{"responses": ["a", "b"]}\n{"responses": ["\xc3", "b"]}\n', "2"),
        ("a.json", "json", b'[{"responses": ["a", "b"]},\n{"responses": ["\xe9", "b"]}]', "2"),
        ("r.tsv", "rated", b"1\tgood\n0\tbad \xff\n", "2"),
    ],
)
def test_invalid_utf8_names_file_and_line(
    tmp_path: Path, name: str, fmt: str, content: bytes, where: str
) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=rf"{f.name}:{where}: not valid UTF-8: byte 0x"):
        load_lists(f, fmt)  # type: ignore[arg-type]


def test_skip_bad_drops_invalid_text_and_keeps_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(
        b'{"responses": ["a", "b"]}\n{"responses": ["\\ud800", "b"]}\n'
        b'{"responses": ["\xff", "b"]}\n{"responses": ["c\\u0000", "d"]}\n'
    )
    result = load_lists(f, "json", skip_bad=True)
    assert [r.responses for r in result.lists] == [("a", "b"), ("c\x00", "d")]
    assert [e.where for e in result.skipped] == ["2", "3"]
