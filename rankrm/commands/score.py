"""``rankrm score``: a JSONL file of rollouts scored offline, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rankrm.commands.common import fail


def score(
    data_file: Annotated[
        Path,
        typer.Argument(
            help="JSONL: messages, prompt/response, text, prompt/chosen/rejected or "
            "prompt/completions per line.",
            show_default=False,
        ),
    ],
    url: Annotated[
        str | None, typer.Option(help="Score through this running service (base URL).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Score with this exported model, in this process.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Results (JSONL). Default: DATA_FILE with .scored.jsonl."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="The service's API key (env RANKRM_API_KEY).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads (--model-dir).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score a JSONL file of conversations, pairs or groups; the results (each record with
    its rewards; pairs also chosen_better; groups also ranks and GRPO advantages) go next to
    it. Run it again to resume after an interruption."""
    import contextlib
    import os

    from rich.progress import Progress

    from rankrm.batch_score import (
        ScoreFileError,
        count_records,
        local_scorer,
        remote_scorer,
        score_file,
    )

    if (url is None) == (model_dir is None):
        fail("give exactly one of --url (a running service) or --model-dir (an exported model)")
        return
    if not data_file.is_file():
        fail(f"{data_file}: no such file")
        return
    target = out or data_file.with_name(data_file.name.removesuffix(".jsonl") + ".scored.jsonl")
    try:
        with contextlib.ExitStack() as stack:
            if url is not None:
                key = api_key or os.environ.get("RANKRM_API_KEY")
                scorer = stack.enter_context(remote_scorer(url, key))
            else:
                assert model_dir is not None
                scorer = local_scorer(model_dir, threads)
            total = count_records(data_file)
            bar = stack.enter_context(Progress(disable=not progress, transient=True))
            task = bar.add_task(f"scoring {data_file.name}", total=total)
            done = score_file(data_file, target, scorer, progress=lambda n: bar.advance(task, n))
    except ScoreFileError as exc:
        fail(str(exc))
        return
    except Exception as exc:  # the model or the service: one clear line, not a traceback
        fail(f"{type(exc).__name__}: {exc}")
        return
    typer.echo(json.dumps({"scored": done, "out": str(target), "records": total}))
