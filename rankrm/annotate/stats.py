"""The dashboard's figures: progress, who did what, how much people agree, and where they
(or the model) disagree most. Read straight from the database on each request."""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from sqlalchemy import select

from rankrm.annotate.consensus import CONSENSUS, Ranks, kendall_w, pair_agreement, ranks_of
from rankrm.annotate.model_loop import model_ranks
from rankrm.annotate.replies import Progress
from rankrm.annotate.schema import CANNOT_RANK, FINISHED, SKIPPED, SUBMITTED, Annotator, Assignment
from rankrm.annotate.schema import Task as TaskRow
from rankrm.annotate.store import Store


@dataclass(frozen=True)
class AnnotatorStats:
    name: str
    ranked: int
    cannot_rank: int
    skipped: int
    median_seconds: float | None
    agreement: float | None  # mean pair agreement with the consensus of the others


@dataclass(frozen=True)
class TaskStats:
    id: str
    prompt: str  # a preview
    rankings: int
    kendall_w: float | None
    agreement: float | None  # mean pair agreement between its annotators
    model_agreement: float | None  # the model's ranking against the consensus


@dataclass(frozen=True)
class Judgements:
    """Every finished assignment, grouped the ways the figures need."""

    rankings: dict[str, dict[str, Ranks]]  # task -> annotator -> ranks
    tasks: dict[str, TaskRow]
    per_annotator: dict[str, list[tuple[str, float | None]]]  # name -> (status, seconds)


@dataclass
class Dashboard:
    progress: Progress
    overlap: int
    annotators: list[AnnotatorStats]
    tasks: list[TaskStats]  # tasks with at least two rankings, most disagreement first
    pairwise_agreement: float | None
    mean_kendall_w: float | None
    model_agreement: float | None
    cannot_rank: list[tuple[str, str, str]] = field(default_factory=list)  # task, who, why


def read_judgements(store: Store) -> Judgements:
    rankings: dict[str, dict[str, Ranks]] = defaultdict(dict)
    per_annotator: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    with store.sessions() as session:
        tasks = {t.id: t for t in session.scalars(select(TaskRow))}
        rows = session.execute(
            select(Assignment, Annotator.name)
            .join(Annotator, Annotator.id == Assignment.annotator_id)
            .where(Assignment.status.in_(FINISHED))
        )
        for assignment, name in rows:
            per_annotator[name].append((assignment.status, assignment.seconds))
            if assignment.status == SUBMITTED and assignment.ranking:
                k = len(tasks[assignment.task_id].responses)
                rankings[assignment.task_id][name] = ranks_of(assignment.ranking, k)
    return Judgements(dict(rankings), tasks, dict(per_annotator))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _preview(prompt: Any, width: int = 120) -> str:
    text = prompt if isinstance(prompt, str) else " / ".join(m["content"] for m in prompt)
    return text if len(text) <= width else text[: width - 1] + "…"


def annotator_agreement(rankings: dict[str, dict[str, Ranks]], method: str) -> dict[str, float]:
    """Each annotator's mean pair agreement with the consensus of the others on their tasks."""
    consensus = CONSENSUS[method]
    scores: dict[str, list[float]] = defaultdict(list)
    for by_name in rankings.values():
        for name, ranks in by_name.items():
            others = [r for other, r in by_name.items() if other != name]
            if others:
                scores[name].append(pair_agreement(ranks, consensus(others)))
    return {name: statistics.fmean(values) for name, values in scores.items()}


def collect(store: Store, method: str = "ranked-pairs") -> Dashboard:
    data = read_judgements(store)
    agreement = annotator_agreement(data.rankings, method)
    annotators = []
    for name in sorted(data.per_annotator):
        done = data.per_annotator[name]
        seconds = [s for status, s in done if status != SKIPPED and s is not None]
        annotators.append(
            AnnotatorStats(
                name=name,
                ranked=sum(status == SUBMITTED for status, _ in done),
                cannot_rank=sum(status == CANNOT_RANK for status, _ in done),
                skipped=sum(status == SKIPPED for status, _ in done),
                median_seconds=statistics.median(seconds) if seconds else None,
                agreement=agreement.get(name),
            )
        )
    tasks, pairs, model = [], [], []
    for task_id, by_name in data.rankings.items():
        task = data.tasks[task_id]
        ranks = list(by_name.values())
        between = [pair_agreement(a, b) for a, b in combinations(ranks, 2)]
        pairs += between
        model_vs = None
        if task.model_rewards is not None:
            model_vs = pair_agreement(model_ranks(task.model_rewards), CONSENSUS[method](ranks))
            model.append(model_vs)
        if len(ranks) >= 2:
            tasks.append(
                TaskStats(
                    task_id,
                    _preview(task.prompt),
                    len(ranks),
                    kendall_w(ranks),
                    _mean(between),
                    model_vs,
                )
            )
    tasks.sort(key=lambda t: (t.agreement if t.agreement is not None else 2.0, t.id))
    with store.sessions() as session:
        flagged = session.execute(
            select(Assignment.task_id, Annotator.name, Assignment.reason)
            .join(Annotator, Annotator.id == Assignment.annotator_id)
            .where(Assignment.status == CANNOT_RANK)
            .order_by(Assignment.finished_at.desc())
            .limit(50)
        )
        cannot = [(t, n, r or "") for t, n, r in flagged]
    ws = [t.kendall_w for t in tasks if t.kendall_w is not None]
    return Dashboard(
        progress=store.progress(),
        overlap=store.overlap,
        annotators=annotators,
        tasks=tasks,
        pairwise_agreement=_mean(pairs),
        mean_kendall_w=_mean(ws),
        model_agreement=_mean(model),
        cannot_rank=cannot,
    )


PLOTS = ("agreement", "annotators")


def plot_png(dashboard: Dashboard, name: str) -> bytes:
    """``agreement``: a histogram of Kendall's W per task; ``annotators``: each annotator's
    count and agreement with the others' consensus."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    if name == "agreement":
        values = [t.kendall_w for t in dashboard.tasks if t.kendall_w is not None]
        axes.hist(values, bins=[i / 10 for i in range(11)], color="#4c72b0", edgecolor="white")
        axes.set_xlabel("Kendall's W per task (1 = all annotators agree)")
        axes.set_ylabel("tasks")
        axes.set_xlim(0, 1)
    else:
        people = dashboard.annotators
        names = [a.name for a in people]
        axes.bar(names, [a.ranked for a in people], color="#4c72b0")
        axes.set_ylabel("rankings")
        twin = axes.twinx()
        twin.plot(names, [a.agreement or 0.0 for a in people], "o", color="#dd8452")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("agreement with the others", color="#dd8452")
        axes.tick_params(axis="x", labelrotation=30)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
