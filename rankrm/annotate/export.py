"""Rankings out of the database as rankrm's JSONL ranking format, for ``rankrm train``.

``none``: one record per ranking, ``{"id", "prompt", "responses", "ranks", "annotator"}``.
``ranked-pairs`` or ``borda``: one consensus record per task, with ``"annotators"``.
Cannot-rank flags and skips are left out; so are rankings that tie every response (they
hold no preference to learn). The file is written whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.annotate.consensus import CONSENSUS
from rankrm.annotate.stats import read_judgements
from rankrm.annotate.store import Store

METHODS = ("none", *CONSENSUS)


@dataclass(frozen=True)
class ExportReport:
    records: int
    tasks: int
    all_tied: int  # rankings (or consensus lists) left out: no preference in them


def export_records(store: Store, method: str, min_rankings: int = 1) -> tuple[list[Any], int]:
    if method not in METHODS:
        raise ValueError(f"consensus must be one of {list(METHODS)}, got {method!r}")
    data = read_judgements(store)
    records: list[dict[str, Any]] = []
    tied = 0
    for task_id in sorted(data.rankings, key=lambda t: data.tasks[t].position):
        task, by_name = data.tasks[task_id], data.rankings[task_id]
        if len(by_name) < min_rankings:
            continue
        base = {"id": task.id, "prompt": task.prompt, "responses": task.responses}
        if method == "none":
            for name in sorted(by_name):
                if len(set(by_name[name])) < 2:
                    tied += 1
                    continue
                records.append({**base, "ranks": by_name[name], "annotator": name})
            continue
        ranks = CONSENSUS[method](list(by_name.values()))
        if len(set(ranks)) < 2:
            tied += 1
            continue
        records.append({**base, "ranks": ranks, "annotators": sorted(by_name)})
    return records, tied


def export(store: Store, out: Path, method: str, min_rankings: int = 1) -> ExportReport:
    """Write the JSONL file atomically (a temporary file beside it, then renamed)."""
    records, tied = export_records(store, method, min_rankings)
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return ExportReport(len(records), len({r["id"] for r in records}), tied)
