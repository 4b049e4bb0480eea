"""The ``rankrm`` command line: train, evaluate (export and serve come later).

Training code is imported inside the commands, so ``rankrm --help`` and the serving side
never import torch.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="rankrm",
    help="Reward models from human ranking lists: train, evaluate, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _add_annotate() -> None:
    from rankrm.annotate.cli import app as annotate

    app.add_typer(annotate, name="annotate")


_add_annotate()


class Format(StrEnum):
    """Input layouts (see ``training.data``)."""

    auto = "auto"
    tsv = "tsv"
    json = "json"
    rated = "rated"


class Loss(StrEnum):
    """Ranking losses (see ``training.losses``)."""

    pairwise = "pairwise"
    listwise = "listwise"
    article = "article"


class Switch(StrEnum):
    """auto / on / off."""

    auto = "auto"
    on = "on"
    off = "off"


class Side(StrEnum):
    """Which end of an over-long input is cut."""

    left = "left"
    right = "right"


DATA = "Data"
MODEL = "Model"
OBJECTIVE = "Objective"
OPTIM = "Optimisation"
RUN = "Run"

FormatOpt = Annotated[
    Format,
    typer.Option(
        help="Layout: tsv (one list a line, tab-separated, best first), json (JSON/JSONL "
        "ranking lists or chosen/rejected pairs: TRL, HH, ShareGPT), rated (LABEL<TAB>TEXT or "
        "{text, score}), auto (from extension and content).",
        rich_help_panel=DATA,
    ),
]
PromptOpt = Annotated[
    bool,
    typer.Option(
        "--has-prompt/--no-prompt",
        help="tsv: the first column is the prompt.",
        rich_help_panel=DATA,
    ),
]
ListSizeOpt = Annotated[
    int,
    typer.Option(
        min=2,
        help="rated: texts per list (distinct labels, ordered by label).",
        rich_help_panel=DATA,
    ),
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad/--strict",
        help="Skip malformed lines and report how many, instead of stopping.",
        rich_help_panel=DATA,
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        help="Seed for list building, data order and initialisation.", rich_help_panel=RUN
    ),
]


def _quiet_transformers() -> None:
    """Keep transformers' load reports and shard progress bars out of our output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _setting_problem(error: Any) -> str:
    """One pydantic error as ``name = value: what is wrong``, named as the flag is."""
    name = ".".join(map(str, error["loc"]))
    if not name:  # a rule across settings: its message names the values and the fix
        return str(error["msg"]).removeprefix("Value error, ")
    return f"--{name.replace('_', '-')} {error['input']!r}: {error['msg']}"


def _with_skip_hint(exc: Exception, skip_bad: bool | None) -> str:
    """A data error, with the way past it when records were read strictly."""
    if skip_bad or str(exc).endswith("no such file"):
        return str(exc)
    return f"{exc} (pass --skip-bad to skip such records; they are counted and reported)"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    train_file: Annotated[Path, typer.Argument(help="Training data file.", show_default=False)],
    out: Annotated[
        Path, typer.Option(help="Output folder (best/, last/, metrics, plot).", rich_help_panel=RUN)
    ] = Path("runs/rm"),
    dev: Annotated[
        Path | None,
        typer.Option(
            help="Dev data file for evaluation and model selection.", rich_help_panel=DATA
        ),
    ] = None,
    dev_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Without --dev: share of the training lists held out as dev.",
            rich_help_panel=DATA,
        ),
    ] = 0.0,
    format: FormatOpt = Format.auto,
    has_prompt: PromptOpt = False,
    list_size: ListSizeOpt = 5,
    lists_per_text: Annotated[
        int,
        typer.Option(
            min=1,
            help="rated: lists anchored on each text (more pairs per epoch).",
            rich_help_panel=DATA,
        ),
    ] = 1,
    skip_bad: SkipOpt = False,
    backbone: Annotated[
        Path | None,
        typer.Option(
            help="Local Hugging Face model folder. Default: the packaged all-MiniLM-L6-v2.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    max_length: Annotated[
        int,
        typer.Option(min=8, help="Tokens per input (prompt + response).", rich_help_panel=MODEL),
    ] = 128,
    truncation_side: Annotated[
        Side,
        typer.Option(
            help="Cut over-long inputs from this end (longest-first between prompt and response).",
            rich_help_panel=MODEL,
        ),
    ] = Side.left,
    loss: Annotated[
        Loss,
        typer.Option(
            help="pairwise: InstructGPT -log sigmoid over all ordered pairs; listwise: "
            "Plackett-Luce; article: the article's sigmoid-without-log, for reproduction only.",
            rich_help_panel=OBJECTIVE,
        ),
    ] = Loss.pairwise,
    margin: Annotated[
        float,
        typer.Option(
            help="pairwise: required reward gap between better and worse.",
            rich_help_panel=OBJECTIVE,
        ),
    ] = 0.0,
    center_coefficient: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of the reward-centering term (mean squared reward).",
            rich_help_panel=OBJECTIVE,
        ),
    ] = 0.0,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1, help="Ranking lists per micro-batch (per process).", rich_help_panel=OPTIM
        ),
    ] = 16,
    grad_accum: Annotated[
        int, typer.Option(min=1, help="Micro-batches per optimizer step.", rich_help_panel=OPTIM)
    ] = 1,
    lr: Annotated[
        float, typer.Option(help="Peak AdamW learning rate.", rich_help_panel=OPTIM)
    ] = 5e-5,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay.", rich_help_panel=OPTIM)
    ] = 0.01,
    warmup_ratio: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Share of steps with linear warmup; then linear decay to 0.",
            rich_help_panel=OPTIM,
        ),
    ] = 0.1,
    epochs: Annotated[
        float, typer.Option(help="Passes over the training lists.", rich_help_panel=OPTIM)
    ] = 1.0,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Optimizer steps to run; overrides --epochs.", rich_help_panel=OPTIM),
    ] = None,
    max_grad_norm: Annotated[
        float, typer.Option(help="Gradient clipping norm.", rich_help_panel=OPTIM)
    ] = 1.0,
    bf16: Annotated[
        Switch,
        typer.Option(
            help="bf16 autocast: auto uses it where the CPU supports bf16 natively.",
            rich_help_panel=OPTIM,
        ),
    ] = Switch.auto,
    seed: SeedOpt = 0,
    threads: Annotated[
        int | None,
        typer.Option(
            help="torch threads per process (default: torch's choice).", rich_help_panel=RUN
        ),
    ] = None,
    eval_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Evaluate on dev every N optimizer steps (0: only at the end).",
            rich_help_panel=RUN,
        ),
    ] = 100,
    save_every: Annotated[
        int,
        typer.Option(
            min=1, help="Write a resumable checkpoint (last/) every N steps.", rich_help_panel=RUN
        ),
    ] = 100,
    eval_batch_size: Annotated[
        int,
        typer.Option(min=1, help="Texts per forward pass when evaluating.", rich_help_panel=RUN),
    ] = 64,
    resume: Annotated[
        bool,
        typer.Option(help="Continue from OUT/last/ (after a crash or kill).", rich_help_panel=RUN),
    ] = False,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar.", rich_help_panel=RUN)
    ] = True,
) -> None:
    """Train a reward model from ranking lists (all C(K,2) pairs of a list at once).

    Runs data-parallel when launched with torchrun, e.g.
    ``torchrun --nproc-per-node 2 -m rankrm train data.jsonl``.
    """
    from training.config import TrainConfig
    from training.data import DataError
    from training.train import train as run

    _quiet_transformers()
    try:
        config = TrainConfig(
            train_file=train_file,
            out=out,
            dev_file=dev,
            dev_fraction=dev_fraction,
            format=format.value,
            has_prompt=has_prompt,
            list_size=list_size,
            lists_per_text=lists_per_text,
            skip_bad=skip_bad,
            backbone=backbone,
            max_length=max_length,
            truncation_side=truncation_side.value,
            loss=loss.value,
            margin=margin,
            center_coefficient=center_coefficient,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            epochs=epochs,
            max_steps=max_steps,
            max_grad_norm=max_grad_norm,
            bf16=bf16.value,
            seed=seed,
            threads=threads,
            eval_every=eval_every,
            save_every=save_every,
            eval_batch_size=eval_batch_size,
            resume=resume,
            progress=progress,
            command=shlex.join(["rankrm", *sys.argv[1:]]),
        )
        result = run(config)
    except DataError as exc:
        _fail(_with_skip_hint(exc, skip_bad))
        return
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # e.g. no backbone installed
        _fail(str(exc))
        return
    summary = {
        "steps": result.steps,
        "best": str(result.best),
        "last": str(result.last),
        "metrics": str(result.metrics_file),
        "plot": str(result.plot),
        "best_dev": result.best_metrics,
    }
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (e.g. runs/rm/best).", show_default=False)
    ],
    data_file: Annotated[
        Path, typer.Argument(help="Data file to evaluate on.", show_default=False)
    ],
    format: FormatOpt = Format.auto,
    has_prompt: PromptOpt = False,
    list_size: ListSizeOpt = 5,
    skip_bad: SkipOpt = False,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    output: Annotated[
        Path | None, typer.Option(help="Also write the metrics to this JSON file.")
    ] = None,
) -> None:
    """Pairwise accuracy, exact-order accuracy, Kendall tau, margin and reward statistics."""
    from training.data import DataError, load_lists
    from training.evaluate import evaluate_lists
    from training.model import load_reward_model

    _quiet_transformers()
    try:
        data = load_lists(
            data_file,
            format.value,
            has_prompt=has_prompt,
            list_size=list_size,
            seed=seed,
            skip_bad=skip_bad,
        )
        metrics = evaluate_lists(load_reward_model(checkpoint), data.lists, batch_size)
    except (DataError, ValueError, FileNotFoundError, OSError) as exc:
        _fail(str(exc))
        return
    report = {
        "checkpoint": str(checkpoint),
        "data": str(data_file),
        "skipped": len(data.skipped),
        **metrics,
    }
    text = json.dumps(report, indent=2)
    if output is not None:
        output.write_text(text + "\n")
    typer.echo(text)


class Quantize(StrEnum):
    """Export precision."""

    none = "none"
    int8 = "int8"
    fp16 = "fp16"


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (e.g. runs/rm/best).", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write (replaced atomically).")] = (
        Path("models/rm")
    ),
    quantize: Annotated[
        Quantize,
        typer.Option(
            help="int8: per-channel int8 weights and per-token int8 activations (batch-invariant); "
            "fp16: half precision for GPUs (serve with provider=cuda); either is refused if it "
            "misses the bars on held-out data."
        ),
    ] = Quantize.none,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Texts for the checks and the reward offset. Default: the run's training file."
        ),
    ] = None,
    eval_file: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Held-out lists for the int8 decision and the card. Default: the run's dev file.",
        ),
    ] = None,
    test_file: Annotated[
        Path | None, typer.Option("--test", help="Test lists, reported in the card only.")
    ] = None,
    format: Annotated[
        Format | None, typer.Option(help="Layout of the data files. Default: the run's.")
    ] = None,
    has_prompt: Annotated[
        bool | None,
        typer.Option(
            "--has-prompt/--no-prompt",
            help="tsv: the first column is the prompt. Default: the run's.",
            show_default=False,
        ),
    ] = None,
    list_size: Annotated[
        int | None,
        typer.Option(min=2, help="rated: texts per list. Default: the run's.", show_default=False),
    ] = None,
    skip_bad: Annotated[
        bool | None,
        typer.Option(
            "--skip-bad/--strict",
            help="Skip malformed records (reported) instead of stopping. Default: the run's.",
            show_default=False,
        ),
    ] = None,
    scale_rewards: Annotated[
        bool,
        typer.Option(help="Also divide rewards by their standard deviation on the reference set."),
    ] = False,
    optimize: Annotated[
        bool,
        typer.Option(
            help="Fuse the graph with onnxruntime's transformer optimizer where it applies."
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            help="Write an int8 model that misses the bars (flagged in manifest and card)."
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Model name. Default: the folder name.")] = None,
    seed: SeedOpt = 0,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads.")] = None,
    max_length: Annotated[
        int | None,
        typer.Option(
            help="Tokens the served model reads at most. Default: what the run trained with; "
            "128 for a model from elsewhere (a chat reward model usually wants more)."
        ),
    ] = None,
    head_weight: Annotated[
        list[str] | None,
        typer.Option(
            help="A multi-output head (num_labels > 1): NAME=WEIGHT of one output in the "
            "reward, repeatable (outputs not named weigh 0). Default: the mean of all outputs.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a checkpoint to ONNX with its tokenizer, manifest and model card, checked
    against torch (parity, batch invariance, loading without torch) before it is written.

    Any local AutoModelForSequenceClassification folder works (TRL's and OpenRLHF's reward
    models included); a tokenizer with a chat template makes the served model read
    conversations through it."""
    from training.data import DataError
    from training.export import ExportConfig, ExportError, export_model
    from training.export_checks import ExportCheckError

    _quiet_transformers()
    config = ExportConfig(
        checkpoint=checkpoint,
        out=out,
        quantize=quantize.value,
        reference=reference,
        eval_file=eval_file,
        test_file=test_file,
        format=format.value if format else None,
        has_prompt=has_prompt,
        list_size=list_size,
        skip_bad=skip_bad,
        scale_rewards=scale_rewards,
        optimize=optimize,
        force=force,
        name=name,
        seed=seed,
        threads=threads,
        max_length=max_length,
        head_weights=_head_weights(head_weight or []),
    )
    try:
        report = export_model(config)
    except DataError as exc:
        _fail(_with_skip_hint(exc, skip_bad))
        return
    except (ExportError, ExportCheckError, ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
        return
    summary = {
        "folder": str(report.folder),
        "files": report.manifest.files,
        "quantization": report.manifest.quantization,
        "checks": report.manifest.checks,
        "evaluation": report.manifest.evaluation,
        "timings_s": report.timings,
    }
    typer.echo(json.dumps(summary, indent=2))


def _head_weights(given: list[str]) -> dict[str, float] | None:
    """``--head-weight NAME=WEIGHT`` values as a mapping (None when none are given)."""
    weights: dict[str, float] = {}
    for i, item in enumerate(given):
        name, sep, value = item.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name or not math.isfinite(weight):
            _fail(f"--head-weight #{i + 1}: {item!r} is not NAME=WEIGHT (a finite number)")
        weights[name] = weight
    return weights or None


@app.command()
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
        _fail("give exactly one of --url (a running service) or --model-dir (an exported model)")
        return
    if not data_file.is_file():
        _fail(f"{data_file}: no such file")
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
        _fail(str(exc))
        return
    except Exception as exc:  # the model or the service: one clear line, not a traceback
        _fail(f"{type(exc).__name__}: {exc}")
        return
    typer.echo(json.dumps({"scored": done, "out": str(target), "records": total}))


SERVE = "Service"


@app.command()
def serve(
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Exported model folder (env RANKRM_MODEL_DIR; default models/default)."),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="NAME=DIR, repeatable: several models in one service, the first the default; "
            "requests pick one with 'model' or a weighted sum with 'weights' (env "
            "RANKRM_MODELS, comma-separated). Replaces --model-dir.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            help="NAME=WEIGHT, repeatable: requests naming no model get this weighted sum of "
            "the models' normalised rewards (env RANKRM_WEIGHTS).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Interface (env RANKRM_HOST; default 127.0.0.1; 0.0.0.0 in containers)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (env RANKRM_PORT; default 8000).")] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Texts per model call (env RANKRM_MAX_BATCH_SIZE; default 32)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Tokens per model call, padding included (env RANKRM_MAX_BATCH_TOKENS; "
            "default 8192)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            help="Wait for batch-mates after the first text (env RANKRM_MAX_WAIT_MS; default 0.5)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    split_overhead_tokens: Annotated[
        float | None,
        typer.Option(
            help="Cost of one model call in padded tokens: batches are split into calls of "
            "similar lengths where that saves more padding (env RANKRM_SPLIT_OVERHEAD_TOKENS; "
            "default measured at start-up; 1e9 never splits)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            help="Texts waiting at most before 429 (env RANKRM_MAX_QUEUE; default 2048)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    policy_format: Annotated[
        str | None,
        typer.Option(
            help="How /get_reward reads a policy's decoded conversation: auto, none, or one "
            "of chatml, llama3, gemma, phi3, deepseek, inst, human "
            "(env RANKRM_POLICY_FORMAT; default auto)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    cors_origins: Annotated[
        str | None,
        typer.Option(
            help="Browser origins allowed to call the API, comma-separated, * for any "
            "(env RANKRM_CORS_ORIGINS; default none: no CORS headers)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_queue_wait_s: Annotated[
        float | None,
        typer.Option(
            help="Model time the queue may hold before 429, at the measured speed "
            "(env RANKRM_MAX_QUEUE_WAIT_S; default a third of --request-timeout-s)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_inflight_bytes: Annotated[
        int | None,
        typer.Option(
            help="Bytes of request bodies held at once before 429; bounds memory "
            "(env RANKRM_MAX_INFLIGHT_BYTES; default 32 MiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_items: Annotated[
        int | None,
        typer.Option(
            help="Texts per request (env RANKRM_MAX_ITEMS; default 512)", rich_help_panel=SERVE
        ),
    ] = None,
    max_reward_items: Annotated[
        int | None,
        typer.Option(
            help="Samples per /get_reward request, scored max-items at a time (env "
            "RANKRM_MAX_REWARD_ITEMS; default 8192: older OpenRLHF posts 1,024 at once)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn: Annotated[
        str | None,
        typer.Option(
            help="A rule-based reward added to /get_reward's: module:function or "
            "file.py:function, f(prompt, response, label) -> float | None (env "
            "RANKRM_REWARD_FN; default none)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the reward function's reward (env RANKRM_REWARD_FN_WEIGHT; default 1)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    reward_fn_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds one reward function call may take; past it a per-sample error (env "
            "RANKRM_REWARD_FN_TIMEOUT_S; default 5)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    score_temperature: Annotated[
        float | None,
        typer.Option(
            help="/get_reward scores = sigmoid(reward / this), in (0, 1) (env "
            "RANKRM_SCORE_TEMPERATURE; default: the model's, recorded at export)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_text_chars: Annotated[
        int | None,
        typer.Option(
            help="Characters per text (env RANKRM_MAX_TEXT_CHARS; default 100000)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            help="Request body limit (env RANKRM_MAX_BODY_BYTES; default 8 MiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    request_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Per-request deadline, 504 past it (env RANKRM_REQUEST_TIMEOUT_S; default 30)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_header_bytes: Annotated[
        int | None,
        typer.Option(
            help="Request line and headers in bytes, 431 past it (env RANKRM_MAX_HEADER_BYTES; "
            "default 64 KiB)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_header_count: Annotated[
        int | None,
        typer.Option(
            help="Headers per request, 431 past it (env RANKRM_MAX_HEADER_COUNT; default 100)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    header_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Time a request head may take after its first byte, 408 past it (env "
            "RANKRM_HEADER_TIMEOUT_S; default 10)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="Open connections at most; new ones past it get 503 and a log line (env "
            "RANKRM_MAX_CONNECTIONS; default 2048)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="onnxruntime intra-op threads (env RANKRM_THREADS; default all cores)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    model_workers: Annotated[
        int | None,
        typer.Option(
            help="Batches in the model at once, each on its own thread, sharing the one "
            "session; cores are shared out among them (env RANKRM_MODEL_WORKERS; default 2, "
            "1 on one core)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    spin: Annotated[
        bool | None,
        typer.Option(
            "--spin/--no-spin",
            help="Let onnxruntime threads busy-wait between batches (env RANKRM_SPIN; default "
            "off: the event loop gets the CPU back).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    background_nice: Annotated[
        int | None,
        typer.Option(
            help="Nice value of the model and tokenizer threads, 0-19: the event loop "
            "(refusals, health checks) runs first when the CPU is short (env "
            "RANKRM_BACKGROUND_NICE; default 19; 0 runs them alike).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    full_gc_interval_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds between full garbage collections, run by the service instead of by "
            "Python's own rule (env RANKRM_FULL_GC_INTERVAL_S; default 30; 0 leaves Python's).",
            rich_help_panel=SERVE,
        ),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="cpu or cuda (needs onnxruntime-gpu) (env RANKRM_PROVIDER; default cpu)",
            rich_help_panel=SERVE,
        ),
    ] = None,
    api_keys: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated accepted API keys (env RANKRM_API_KEYS; default none: open). "
            "Prefer the environment: flags show in process lists.",
            rich_help_panel=SERVE,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning or error (env RANKRM_LOG_LEVEL; default info)."),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (env RANKRM_ACCESS_LOG; default off: /metrics "
            "counts requests by endpoint and status).",
        ),
    ] = None,
    otel: Annotated[
        bool | None,
        typer.Option(
            "--otel/--no-otel",
            help="FastAPI's native OpenTelemetry spans and metrics (env RANKRM_OTEL; default off).",
        ),
    ] = None,
) -> None:
    """Serve rewards, preferences and rankings over HTTP with dynamic batching.

    Flags override RANKRM_* environment variables, which override the defaults.
    """
    import uvicorn
    from pydantic import ValidationError

    from app.config import Settings
    from app.main import create_app
    from app.server import Server
    from rankrm.manifest import ManifestError

    given = {k: v for k, v in locals().items() if k in Settings.model_fields and v is not None}
    try:
        settings = Settings(**given)
        application = create_app(settings)
    except ValidationError as exc:
        _fail("invalid settings: " + "; ".join(_setting_problem(e) for e in exc.errors()))
        return
    except (ManifestError, RuntimeError, OSError) as exc:
        _fail(f"cannot load the model: {exc}")
        return
    except ValueError as exc:  # e.g. a --reward-fn that does not load
        _fail(f"cannot start: {exc}")
        return
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    Server(config, settings.head_limits(), settings.max_connections).run()


def main() -> None:
    """Entry point of the ``rankrm`` program."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()
