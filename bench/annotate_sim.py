"""Simulated annotators against the real annotation app, where the truth is known.

500 tasks of K=4 responses whose true order is known; 8 annotators at once over HTTP
(overlap 3): six careful ones (one random adjacent swap per task, now and then a tie), one
sloppy (three swaps), one who answers at random. Checks that no task is lost or given twice,
then prints the dashboard's agreement figures beside the truth they should reflect.

    .venv/bin/python bench/annotate_sim.py [--db URL] [--tasks 500] [--overlap 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from rankrm.annotate.consensus import CONSENSUS, pair_agreement
from rankrm.annotate.database import make_engine, migrate
from rankrm.annotate.stats import collect, read_judgements
from rankrm.annotate.store import Store
from rankrm.annotate.tasks import TaskSpec
from rankrm.annotate.web import create_app

K = 4
PEOPLE = {f"careful{i}": ("careful", 1) for i in range(6)} | {
    "sloppy": ("sloppy", 3),
    "random": ("random", 0),
}


def answer(kind: str, swaps: int, rng: random.Random) -> list[list[int]]:
    """An order of responses 0..K-1 (truth: 0 best) as this kind of annotator gives it."""
    order = list(range(K))
    if kind == "random":
        rng.shuffle(order)
        return [[i] for i in order]
    for _ in range(swaps):
        j = rng.randrange(K - 1)
        order[j], order[j + 1] = order[j + 1], order[j]
    groups = [[i] for i in order]
    if kind == "careful" and rng.random() < 0.1:  # a tie between two neighbours
        j = rng.randrange(K - 1)
        groups[j : j + 2] = [groups[j] + groups[j + 1]]
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=None, help="database (default: a new SQLite file)")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--overlap", type=int, default=3)
    args = parser.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp()) / "sim.db")
    engine = make_engine(db)
    migrate(engine)
    store = Store(engine, overlap=args.overlap)
    specs = [
        TaskSpec(f"s{i}", f"prompt {i}", tuple(f"response {i}.{j}" for j in range(K)))
        for i in range(args.tasks)
    ]
    store.load(specs, "simulated")
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    done: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def annotate(name: str, kind: str, swaps: int, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                c.post("/api/login", json={"name": name}).raise_for_status()
                while (task := c.get("/api/next").json()["task"]) is not None:
                    body: dict[str, Any] = {
                        "assignment": task["assignment"],
                        "order": answer(kind, swaps, rng),
                    }
                    c.post("/api/submit", json=body).raise_for_status()
                    with lock:
                        done[(task["task_id"], name)] += 1
        except Exception as exc:  # reported below
            failures.append(f"{name}: {exc!r}")

    started = time.perf_counter()
    workers = [
        threading.Thread(target=annotate, args=(name, kind, swaps, seed))
        for seed, (name, (kind, swaps)) in enumerate(PEOPLE.items())
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    server.should_exit = True
    thread.join()

    per_task = Counter(task for task, _ in done)
    print(f"database: {engine.url.get_backend_name()}; {args.tasks} tasks, overlap {args.overlap}")
    print(f"{len(PEOPLE)} annotators over HTTP: {sum(done.values())} rankings in {elapsed:.1f} s")
    print(
        f"tasks ranked: {len(per_task)} of {args.tasks} (lost: {args.tasks - len(per_task)}); "
        f"rankings per task: {sorted(Counter(per_task.values()).items())}; "
        f"same annotator twice on a task: {sum(n > 1 for n in done.values())}; "
        f"failed requests: {len(failures)}"
    )
    truth = list(range(1, K + 1))
    dashboard = collect(store)
    data = read_judgements(store)
    print(f"\npairwise agreement between annotators: {dashboard.pairwise_agreement:.3f}")
    print(f"mean Kendall's W per task: {dashboard.mean_kendall_w:.3f}")
    print(
        "\n| annotator | kind | rankings | agreement with the others' consensus | with the truth |"
    )
    print("|---|---|---|---|---|")
    for a in dashboard.annotators:
        own = [pair_agreement(r[a.name], truth) for r in data.rankings.values() if a.name in r]
        print(
            f"| {a.name} | {PEOPLE[a.name][0]} | {a.ranked} | {a.agreement:.3f} | "
            f"{statistics.fmean(own):.3f} |"
        )
    for method, consensus in CONSENSUS.items():
        scores = [
            pair_agreement(consensus(list(r.values())), truth) for r in data.rankings.values()
        ]
        exact = sum(consensus(list(r.values())) == truth for r in data.rankings.values())
        print(
            f"\nconsensus {method}: pair agreement with the truth {statistics.fmean(scores):.3f}; "
            f"exactly the true order on {exact} of {len(data.rankings)} tasks"
        )
    engine.dispose()


if __name__ == "__main__":
    main()
