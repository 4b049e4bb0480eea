"""``rankrm score FILE``: score a JSONL file of conversations, pairs or groups, offline
(an exported model folder, in this process) or through a running service (its URL), with
the same numbers the service gives.

Each line is one record, kept as it is with the scores added:

- ``{"messages": [...]}`` (ending with the assistant's answer), ``{"prompt"?, "response"}``
  or ``{"text"}``: adds ``reward``;
- ``{"prompt"?, "chosen", "rejected"}``: adds ``reward_chosen``, ``reward_rejected`` and
  ``chosen_better``;
- ``{"prompt"?, "completions": [...]}``: adds ``rewards``, ``ranks`` and ``advantages``
  (GRPO's, as ``/groups`` gives them).

Prompts are text or chat messages. Results go to ``OUT`` (default ``FILE`` with
``.scored.jsonl``), written a chunk of complete lines at a time; a run that stops is resumed
by running it again (the lines already in ``OUT`` are kept and skipped). A malformed line
stops the run with ``FILE:LINE: problem`` before anything of its chunk is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.groups import group_stats

Item = dict[str, Any]  # a /score item: {"prompt"?, "response"} or {"messages"}
Scorer = Callable[[Sequence[Item]], list[float]]


class ScoreFileError(ValueError):
    """A malformed record, located by file and line."""


@dataclass
class Record:
    """One input line: the items it is scored as, and how rewards go back into it."""

    line: int
    data: dict[str, Any]
    items: list[Item]
    kind: str  # "one", "pair" or "group"

    def result(self, rewards: list[float]) -> dict[str, Any]:
        """The record with its scores added."""
        out = dict(self.data)
        if self.kind == "one":
            out["reward"] = rewards[0]
        elif self.kind == "pair":
            out.update(
                reward_chosen=rewards[0],
                reward_rejected=rewards[1],
                chosen_better=rewards[0] > rewards[1],
            )
        else:
            stats = group_stats(rewards)
            out.update(rewards=rewards, ranks=stats.ranks, advantages=stats.advantages)
        return out


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string")
    return value


def _item(prompt: Any, response: Any, where: str) -> Item:
    response = _text(response, where)
    if prompt is None or isinstance(prompt, str):
        return {"prompt": prompt or None, "response": response}
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return {"messages": [*prompt, {"role": "assistant", "content": response}]}
    raise ValueError("'prompt' must be text or a list of chat messages")


def parse_record(data: Any) -> tuple[list[Item], str]:
    """The items a record is scored as, and its kind; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a record must be a JSON object")
    prompt = data.get("prompt")
    if "messages" in data:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of chat messages")
        return [{"messages": messages}], "one"
    if "chosen" in data or "rejected" in data:
        pair = [_item(prompt, data.get(k), f"'{k}'") for k in ("chosen", "rejected")]
        return pair, "pair"
    if "completions" in data:
        completions = data["completions"]
        if not isinstance(completions, list) or not completions:
            raise ValueError("'completions' must be a non-empty list of texts")
        items = [_item(prompt, c, f"'completions'[{i}]") for i, c in enumerate(completions)]
        return items, "group"
    if "response" in data:
        return [_item(prompt, data["response"], "'response'")], "one"
    if "text" in data:
        return [_item(None, data["text"], "'text'")], "one"
    raise ValueError(
        "no field to score: expected messages, response, text, chosen/rejected or completions"
    )


def read_records(path: Path, skip: int = 0) -> Iterator[Record]:
    """The records of ``path`` after the first ``skip`` (blank lines ignored)."""
    seen = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            seen += 1
            if seen <= skip:
                continue
            try:
                data = json.loads(line)
                items, kind = parse_record(data)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise ScoreFileError(f"{path}:{number}: {exc}") from exc
            yield Record(number, data, items, kind)


def done_lines(out: Path) -> int:
    """Complete result lines already in ``out`` (a torn last line is dropped)."""
    if not out.is_file():
        return 0
    text = out.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # a run stopped mid-line: cut the torn line off
        text = text[: text.rfind("\n") + 1]
        out.write_text(text, encoding="utf-8")
    return sum(1 for line in text.splitlines() if line.strip())


def count_records(path: Path) -> int:
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def score_file(
    path: Path,
    out: Path,
    scorer: Scorer,
    *,
    chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score ``path`` into ``out`` (resuming after the lines ``out`` holds); returns the
    records scored by this call. ``progress`` is told of each chunk's record count."""
    skip = done_lines(out)
    scored = 0
    pending: list[Record] = []

    def flush() -> None:
        nonlocal scored
        items = [item for record in pending for item in record.items]
        rewards = scorer(items)
        lines, at = [], 0
        for record in pending:
            lines.append(json.dumps(record.result(rewards[at : at + len(record.items)])))
            at += len(record.items)
        with out.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        scored += len(pending)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for record in read_records(path, skip):
        pending.append(record)
        if sum(len(r.items) for r in pending) >= chunk:
            flush()
    if pending:
        flush()
    return scored


def local_scorer(model_dir: Path, threads: int | None = None) -> Scorer:
    """Score with an exported model in this process: the service's encoding and model, so
    the same rewards (normalised) as ``/score``."""
    from rankrm.runtime import OnnxRewardModel

    model = OnnxRewardModel.load(model_dir, threads=threads)

    def score(items: Sequence[Item]) -> list[float]:
        tokens = []
        for item in items:
            if "messages" in item:
                tokens += model.encode_conversations([item["messages"]])
            else:
                tokens += model.encode([item["prompt"]], [item["response"]])
        return [float(v) for v in model.normalize(model.raw_scores_of(tokens))]

    return score


@contextmanager
def remote_scorer(url: str, api_key: str | None = None) -> Iterator[Scorer]:
    """Score through a running service (``/score`` items, split and retried by the client);
    its connections close when the block ends."""
    from rankrm.client import RewardClient

    with RewardClient(url, api_key=api_key) as client:
        yield client.score_items
