"""Read ranking data in several layouts into one in-memory form: :class:`RankingList`.

Layouts (``--format``):

``tsv``
    The article's format: one list a line, responses separated by tabs, best first, no
    header. With ``has_prompt`` the first column is the prompt. Quotes are literal text.
``json``
    JSON Lines (``.jsonl``) or a JSON array (``.json``) of records, the layout detected
    per record:

    * ranking lists ``{"prompt"?, "responses": [best, ..., worst], "ranks"?: [1, ...]}``
      (rank 1 is best; equal ranks are ties and give no pair; ``id``, ``annotator`` and
      ``annotators``, as ``rankrm annotate export`` writes them, are kept out of training);
    * TRL pairs ``{"prompt"?, "chosen", "rejected"}`` with strings or chat-message lists
      (without a prompt, the shared leading messages are the prompt);
    * Anthropic HH transcripts (``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` strings; the
      shared prefix up to the last shared ``Assistant:`` is the prompt);
    * ShareGPT / LLaMA-Factory ``{"conversations", "chosen", "rejected", "system"?}``.
``rated``
    Rated texts, ``LABEL<TAB>TEXT`` lines or JSON records ``{"text", "score", "prompt"?}``,
    turned into lists of ``list_size`` texts with distinct labels ordered by label
    (see :func:`lists_from_rated`).
``auto``
    Guess from the extension and the first lines.

Every malformed line stops reading with a :class:`DataError` naming file, line and
problem, unless ``skip_bad`` is set: then the line is dropped and reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from rankrm.encoding import render_messages
from training.lists import (
    DataError,
    LoadResult,
    RankingList,
    check_fields,
    optional_string,
    split_dev,
    string_field,
)
from training.rated import RatedText, lists_from_rated, read_rated, read_rated_file
from training.sources import BadRecord, is_number, json_records, tsv_lines

__all__ = [
    "FORMATS",
    "DataError",
    "DataFormat",
    "LoadResult",
    "RankingList",
    "RatedText",
    "detect_format",
    "lists_from_rated",
    "load_lists",
    "read_rated",
    "record_to_list",
    "split_dev",
]

DataFormat = Literal["auto", "tsv", "json", "rated"]
FORMATS: tuple[str, ...] = ("auto", "tsv", "json", "rated")

# --------------------------------------------------------------------------- records


def _message_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """A response given as messages: its contents if all are the assistant's, else a render."""
    roles = {str(m.get("role", m.get("from", ""))).lower() for m in messages}
    if roles <= {"assistant", "gpt"}:
        return "\n\n".join(
            string_field(m.get("content", m.get("value")), "content") for m in messages
        )
    return render_messages(messages)


def _split_conversations(
    chosen: list[Mapping[str, Any]], rejected: list[Mapping[str, Any]]
) -> tuple[str | None, str, str]:
    """Implicit prompt: the messages both conversations share form the prompt."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = render_messages(chosen[:shared]) if shared else None
    return prompt, _message_text(chosen[shared:]), _message_text(rejected[shared:])


_HH_MARKER = "\n\nAssistant:"


def _split_transcripts(chosen: str, rejected: str) -> tuple[str | None, str, str]:
    """HH-RLHF: the prompt is the shared prefix up to its last ``Assistant:`` turn."""
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    cut = chosen.rfind(_HH_MARKER, 0, common)
    if cut < 0:
        return None, chosen, rejected
    cut += len(_HH_MARKER)
    return chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()


def _pair_from_trl(record: Mapping[str, Any]) -> RankingList:
    check_fields(record, {"prompt", "chosen", "rejected", "id"}, "pairwise (chosen/rejected)")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        if prompt is None:
            prompt_text, good, bad = _split_conversations(chosen, rejected)
        else:
            prompt_text = render_messages(prompt) if isinstance(prompt, list) else prompt
            good, bad = _message_text(chosen), _message_text(rejected)
        return RankingList.ordered(optional_string(prompt_text), [good, bad])
    good, bad = string_field(chosen, "chosen"), string_field(rejected, "rejected")
    if prompt is None:
        prompt_text, good, bad = _split_transcripts(good, bad)
    else:
        prompt_text = render_messages(prompt) if isinstance(prompt, list) else prompt
    return RankingList.ordered(optional_string(prompt_text), [good, bad])


def _sharegpt_value(value: Any, name: str) -> str:
    if isinstance(value, Mapping):
        return string_field(value.get("value", value.get("content")), f"{name}.value")
    return string_field(value, name)


def _pair_from_sharegpt(record: Mapping[str, Any]) -> RankingList:
    check_fields(
        record, {"conversations", "chosen", "rejected", "system", "tools", "id"}, "ShareGPT"
    )
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise ValueError("field 'conversations' must be a non-empty list of turns")
    system = record.get("system")
    messages = (
        [{"from": "system", "value": string_field(system, "system")}] if system else []
    ) + turns
    prompt = render_messages(messages)
    good = _sharegpt_value(record["chosen"], "chosen")
    bad = _sharegpt_value(record["rejected"], "rejected")
    return RankingList.ordered(prompt, [good, bad])


def _list_from_ranking(record: Mapping[str, Any]) -> RankingList:
    check_fields(
        record, {"prompt", "responses", "ranks", "id", "annotator", "annotators"}, "ranking list"
    )
    responses = record["responses"]
    if not isinstance(responses, list):
        raise ValueError("field 'responses' must be a list of strings")
    texts = tuple(string_field(r, f"responses[{i}]") for i, r in enumerate(responses))
    prompt = record.get("prompt")
    prompt_text = render_messages(prompt) if isinstance(prompt, list) else optional_string(prompt)
    ranks = record.get("ranks")
    if ranks is None:
        return RankingList.ordered(prompt_text, texts)
    if not isinstance(ranks, list):
        raise ValueError("field 'ranks' must be a list of integers (1 = best)")
    return RankingList(prompt_text, texts, tuple(ranks))


def record_to_list(record: Any) -> RankingList:
    """Turn one JSON record of any supported ranking or pairwise layout into a list."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "responses" in record:
        return _list_from_ranking(record)
    if "chosen" in record and "rejected" in record:
        if "conversations" in record:
            return _pair_from_sharegpt(record)
        return _pair_from_trl(record)
    raise ValueError(
        f"unrecognised record with fields {sorted(record)}: expected 'responses' (ranking "
        "list), 'chosen'+'rejected' (pairs), or 'text'+'score' (rated, with --format rated)"
    )


def detect_format(path: Path) -> DataFormat:
    """Guess the layout of ``path`` from its extension and first records."""
    if path.suffix.lower() in (".json", ".jsonl"):
        for _, record in json_records(path):
            if (
                isinstance(record, dict)
                and "text" in record
                and not ({"responses", "chosen"} & set(record))
            ):
                return "rated"
            return "json"
        return "json"
    rows = [cols for _, cols in zip(range(50), tsv_lines(path), strict=False)]
    if rows and all(
        not isinstance(cols, BadRecord) and len(cols) == 2 and is_number(cols[0])
        for _, cols in rows
    ):
        return "rated"
    return "tsv"


def load_lists(
    path: Path | str,
    fmt: DataFormat = "auto",
    *,
    has_prompt: bool = False,
    list_size: int = 5,
    seed: int = 0,
    lists_per_text: int = 1,
    skip_bad: bool = False,
) -> LoadResult:
    """Read ``path`` into ranking lists (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "0", "no such file")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    result = LoadResult(lists=[])

    def fail(where: str, problem: str) -> None:
        error = DataError(path, where, problem)
        if not skip_bad:
            raise error
        result.skipped.append(error)

    if fmt == "rated":
        rated = read_rated_file(path, fail)
        result.lists = lists_from_rated(
            rated, list_size=list_size, seed=seed, lists_per_text=lists_per_text
        )
        if not result.lists:
            raise DataError(path, "0", "rated texts need at least 2 distinct labels per prompt")
        return result
    if fmt == "tsv":
        first = 1 if has_prompt else 0
        for where, cols in tsv_lines(path):
            if isinstance(cols, BadRecord):
                fail(where, str(cols))
                continue
            if len(cols) - first < 2:
                fail(where, f"{len(cols)} column(s): need {first + 2} or more (tab-separated)")
                continue
            try:
                prompt = cols[0] if has_prompt else None
                result.lists.append(RankingList.ordered(prompt, cols[first:]))
            except ValueError as exc:
                fail(where, str(exc))
    else:
        for where, record in json_records(path):
            if isinstance(record, BadRecord):
                fail(where, str(record))
                continue
            try:
                result.lists.append(record_to_list(record))
            except (ValueError, KeyError, TypeError) as exc:
                fail(where, str(exc))
    if not result.lists:
        raise DataError(path, "0", "no valid ranking lists in the file")
    return result
