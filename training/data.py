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

import json
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rankrm.encoding import find_unicode_problem, render_messages

DataFormat = Literal["auto", "tsv", "json", "rated"]
FORMATS: tuple[str, ...] = ("auto", "tsv", "json", "rated")


class DataError(ValueError):
    """A malformed record, located by file and line (or JSON array item)."""

    def __init__(self, path: Path | str, where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.path}:{where}: {problem}")


@dataclass(frozen=True)
class RankingList:
    """One prompt (optional) and K >= 2 responses in rank order, best first.

    ``ranks[i]`` is the rank of ``responses[i]`` (1 = best); equal ranks are ties.
    """

    prompt: str | None
    responses: tuple[str, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        k = len(self.responses)
        if k < 2:
            raise ValueError(f"a ranking list needs at least 2 responses, got {k}")
        for i, response in enumerate(self.responses):
            if not isinstance(response, str):
                raise ValueError(f"response {i} is {type(response).__name__}, not a string")
            if not response.strip():
                raise ValueError(f"response {i} is empty")
        seen: dict[str, int] = {}
        for i, response in enumerate(self.responses):
            if response in seen:
                raise ValueError(f"responses {seen[response]} and {i} are identical")
            seen[response] = i
        if len(self.ranks) != k:
            raise ValueError(f"{len(self.ranks)} ranks for {k} responses")
        if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be integers >= 1, got {list(self.ranks)}")
        if len(set(self.ranks)) < 2:
            raise ValueError("all responses are tied: the list holds no preference")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt is {type(self.prompt).__name__}, not a string")

    @classmethod
    def ordered(cls, prompt: str | None, responses: Sequence[str]) -> RankingList:
        """A list given best first, without ties."""
        return cls(prompt or None, tuple(responses), tuple(range(1, len(responses) + 1)))


@dataclass
class LoadResult:
    """Lists read from one file, and the records skipped under ``skip_bad``."""

    lists: list[RankingList]
    skipped: list[DataError] = field(default_factory=list)


# --------------------------------------------------------------------------- records


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _check_fields(record: Mapping[str, Any], allowed: set[str], layout: str) -> None:
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} for the {layout} layout (allowed: {sorted(allowed)})"
        )


def _message_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """A response given as messages: its contents if all are the assistant's, else a render."""
    roles = {str(m.get("role", m.get("from", ""))).lower() for m in messages}
    if roles <= {"assistant", "gpt"}:
        return "\n\n".join(_string(m.get("content", m.get("value")), "content") for m in messages)
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
    _check_fields(record, {"prompt", "chosen", "rejected", "id"}, "pairwise (chosen/rejected)")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        if prompt is None:
            prompt_text, good, bad = _split_conversations(chosen, rejected)
        else:
            prompt_text = render_messages(prompt) if isinstance(prompt, list) else prompt
            good, bad = _message_text(chosen), _message_text(rejected)
        return RankingList.ordered(_optional_string(prompt_text), [good, bad])
    good, bad = _string(chosen, "chosen"), _string(rejected, "rejected")
    if prompt is None:
        prompt_text, good, bad = _split_transcripts(good, bad)
    else:
        prompt_text = render_messages(prompt) if isinstance(prompt, list) else prompt
    return RankingList.ordered(_optional_string(prompt_text), [good, bad])


def _sharegpt_value(value: Any, name: str) -> str:
    if isinstance(value, Mapping):
        return _string(value.get("value", value.get("content")), f"{name}.value")
    return _string(value, name)


def _pair_from_sharegpt(record: Mapping[str, Any]) -> RankingList:
    _check_fields(
        record, {"conversations", "chosen", "rejected", "system", "tools", "id"}, "ShareGPT"
    )
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise ValueError("field 'conversations' must be a non-empty list of turns")
    system = record.get("system")
    messages = ([{"from": "system", "value": _string(system, "system")}] if system else []) + turns
    prompt = render_messages(messages)
    good = _sharegpt_value(record["chosen"], "chosen")
    bad = _sharegpt_value(record["rejected"], "rejected")
    return RankingList.ordered(prompt, [good, bad])


def _optional_string(value: Any) -> str | None:
    if value is None:
        return None
    return _string(value, "prompt") or None


def _list_from_ranking(record: Mapping[str, Any]) -> RankingList:
    _check_fields(
        record, {"prompt", "responses", "ranks", "id", "annotator", "annotators"}, "ranking list"
    )
    responses = record["responses"]
    if not isinstance(responses, list):
        raise ValueError("field 'responses' must be a list of strings")
    texts = tuple(_string(r, f"responses[{i}]") for i, r in enumerate(responses))
    prompt = record.get("prompt")
    prompt_text = render_messages(prompt) if isinstance(prompt, list) else _optional_string(prompt)
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


# --------------------------------------------------------------------------- files


class BadRecord(ValueError):
    """A record that could not be read (invalid JSON, invalid UTF-8 or Unicode)."""


def _decoded(raw: bytes) -> str | BadRecord:
    """A line's bytes as text, or why they are not UTF-8 (with the column)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} ({exc.reason})"
        )


def _parsed(text: str) -> Any:
    """One JSON document, or why it cannot be used: invalid JSON, or a lone surrogate
    escape in any string (see ``rankrm.encoding.unicode_problem``)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRecord(f"invalid JSON: {exc.msg} (column {exc.colno})")
    problem = find_unicode_problem(record)
    return BadRecord(problem) if problem else record


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, record or :class:`BadRecord`): ``N`` (the line) for JSON Lines,
    ``item N`` for a JSON array."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"["):
        text = _decoded(data)
        if isinstance(text, BadRecord):
            raise DataError(path, _line_of_bad_byte(data), str(text))
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"{exc.lineno}", f"invalid JSON: {exc.msg}") from exc
        for index, item in enumerate(items):
            problem = find_unicode_problem(item)
            yield f"item {index}", BadRecord(problem) if problem else item
        return
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        text = _decoded(raw)
        yield f"{number}", text if isinstance(text, BadRecord) else _parsed(text)


def _line_of_bad_byte(data: bytes) -> str:
    """The line holding the first byte that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return str(data[: exc.start].count(b"\n") + 1)
    return "0"


def _tsv_lines(path: Path) -> Iterator[tuple[str, list[str] | BadRecord]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = _decoded(raw.rstrip(b"\r\n"))
            if isinstance(text, BadRecord):
                yield f"{number}", text
            elif text.strip():
                yield f"{number}", text.split("\t")


def detect_format(path: Path) -> DataFormat:
    """Guess the layout of ``path`` from its extension and first records."""
    if path.suffix.lower() in (".json", ".jsonl"):
        for _, record in _json_records(path):
            if (
                isinstance(record, dict)
                and "text" in record
                and not ({"responses", "chosen"} & set(record))
            ):
                return "rated"
            return "json"
        return "json"
    rows = [cols for _, cols in zip(range(50), _tsv_lines(path), strict=False)]
    if rows and all(
        not isinstance(cols, BadRecord) and len(cols) == 2 and _is_number(cols[0])
        for _, cols in rows
    ):
        return "rated"
    return "tsv"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
        rated = _read_rated(path, fail)
        result.lists = lists_from_rated(
            rated, list_size=list_size, seed=seed, lists_per_text=lists_per_text
        )
        if not result.lists:
            raise DataError(path, "0", "rated texts need at least 2 distinct labels per prompt")
        return result
    if fmt == "tsv":
        first = 1 if has_prompt else 0
        for where, cols in _tsv_lines(path):
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
        for where, record in _json_records(path):
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


# --------------------------------------------------------------------------- rated texts


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

    return _read_rated(path, fail)


def _read_rated(path: Path, fail: Any) -> list[RatedText]:
    texts: list[RatedText] = []
    if path.suffix.lower() in (".json", ".jsonl"):
        for where, record in _json_records(path):
            if isinstance(record, BadRecord):
                fail(where, str(record))
                continue
            try:
                texts.append(_rated_record(record))
            except (ValueError, TypeError) as exc:
                fail(where, str(exc))
        return texts
    for where, cols in _tsv_lines(path):
        if isinstance(cols, BadRecord):
            fail(where, str(cols))
            continue
        if len(cols) != 2:
            fail(where, f"{len(cols)} column(s): expected LABEL<TAB>TEXT")
            continue
        if not _is_number(cols[0]):
            fail(where, f"label {cols[0]!r} is not a number")
            continue
        if not cols[1].strip():
            fail(where, "empty text")
            continue
        texts.append(RatedText(cols[1], float(cols[0])))
    return texts


def _rated_record(record: Any) -> RatedText:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    score_field = "score" if "score" in record else "label"
    _check_fields(record, {"text", score_field, "prompt", "id"}, "rated text")
    if "text" not in record or score_field not in record:
        raise ValueError("a rated record needs 'text' and 'score' (or 'label')")
    text = _string(record["text"], "text")
    if not text.strip():
        raise ValueError("empty text")
    score = record[score_field]
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise ValueError(f"field {score_field!r} must be a number, got {score!r}")
    return RatedText(text, float(score), _optional_string(record.get("prompt")))


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


def split_dev(
    lists: Sequence[RankingList], fraction: float, seed: int
) -> tuple[list[RankingList], list[RankingList]]:
    """Hold out ``fraction`` of the lists (shuffled with ``seed``) as a dev set."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be between 0 and 1, got {fraction}")
    order = list(range(len(lists)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(lists) * fraction))
    dev = [lists[i] for i in order[:n_dev]]
    train = [lists[i] for i in order[n_dev:]]
    if not train:
        raise ValueError("the dev fraction leaves no training lists")
    return train, dev
