"""The scoring endpoints: /score, /compare, /rank, /groups and OpenRLHF's /get_reward."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.engine import PromptInput
from app.schemas import (
    ERROR_RESPONSES,
    CompareRequest,
    CompareResponse,
    Comparison,
    GetRewardRequest,
    GetRewardResponse,
    GroupResult,
    GroupsRequest,
    GroupsResponse,
    Ranked,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
)
from app.scoring import (
    Scores,
    conversation_input,
    head_outputs,
    model_label,
    prompt_input,
    rewards,
    score_in_slices,
    score_with,
)
from app.security import require_api_key, service_state
from app.state import ServiceState
from rankrm.formats import FORMAT_IDS, parse_conversation
from rankrm.groups import group_stats

State = Annotated[ServiceState, Depends(service_state)]

router = APIRouter(
    tags=["scoring"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES
)


def head_outputs_by_name(scores: Scores) -> dict[str, list[float]] | None:
    """A multi-output head's outputs as one list per output name (OpenRLHF's layout)."""
    per_input = head_outputs(scores)
    if per_input is None:
        return None
    return {name: [one[name] for one in per_input] for name in scores.head_names}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


@router.post("/score", response_model=ScoreResponse, response_model_exclude_none=True)
async def score_texts(body: ScoreRequest, request: Request, state: State) -> ScoreResponse:
    """One reward per text (or per prompt/response item), in order."""
    prompts: list[PromptInput]
    responses: list[str]
    if body.texts is not None:
        prompts = [None] * len(body.texts)
        responses = body.texts
        names = [f"texts[{i}]" for i in range(len(responses))]
    else:
        items = body.items or []
        names = [f"items[{i}]" for i in range(len(items))]
        prompts, responses = [], []
        for item, name in zip(items, names, strict=True):
            if item.messages is not None:
                prompt, response = conversation_input(item.messages, f"{name}.messages")
            else:
                prompt, response = prompt_input(item.prompt, f"{name}.prompt"), item.response or ""
            prompts.append(prompt)
            responses.append(response)
    scores = await score_with(
        state, request, prompts, responses, names, body.truncate, body.choice()
    )
    return ScoreResponse(
        model=model_label(state, body.choice()),
        normalized=not body.raw,
        rewards=rewards(scores, body.raw),
        truncated=scores.truncated,
        heads=head_outputs(scores) if body.return_heads else None,
        usage=scores.usage,
        timings=scores.timings,
    )


@router.post("/compare", response_model=CompareResponse)
async def compare(body: CompareRequest, request: Request, state: State) -> CompareResponse:
    """Both rewards of each pair and P(a preferred to b) = sigmoid(r_a - r_b) (raw rewards:
    the normalisation offset cancels and the model's own scale is kept)."""
    prompts: list[PromptInput] = []
    responses: list[str] = []
    names: list[str] = []
    for i, pair in enumerate(body.pairs):
        prompt = prompt_input(pair.prompt, f"pairs[{i}].prompt")
        prompts += [prompt, prompt]
        responses += [pair.a, pair.b]
        names += [f"pairs[{i}].a", f"pairs[{i}].b"]
    scores = await score_with(
        state, request, prompts, responses, names, body.truncate, body.choice()
    )
    shown = rewards(scores, body.raw)
    results = [
        Comparison(
            reward_a=shown[2 * i],
            reward_b=shown[2 * i + 1],
            p_a_better=_sigmoid(float(scores.raw[2 * i] - scores.raw[2 * i + 1])),
            truncated=scores.truncated[2 * i] or scores.truncated[2 * i + 1],
        )
        for i in range(len(body.pairs))
    ]
    return CompareResponse(
        model=model_label(state, body.choice()),
        normalized=not body.raw,
        results=results,
        usage=scores.usage,
        timings=scores.timings,
    )


@router.post("/rank", response_model=RankResponse)
async def rank(body: RankRequest, request: Request, state: State) -> RankResponse:
    """Candidates ordered best first, with rewards and original indices (best-of-n)."""
    prompt = prompt_input(body.prompt, "prompt")
    names = [f"candidates[{i}]" for i in range(len(body.candidates))]
    scores = await score_with(
        state, request, [prompt] * len(body.candidates), body.candidates, names, body.truncate,
        body.choice(),
    )  # fmt: skip
    shown = rewards(scores, body.raw)
    order = sorted(range(len(shown)), key=lambda i: (-shown[i], i))[: body.top_k]
    ranking = [
        Ranked(
            index=i,
            reward=shown[i],
            truncated=scores.truncated[i],
            text=body.candidates[i] if body.return_texts else None,
        )
        for i in order
    ]
    return RankResponse(
        model=model_label(state, body.choice()),
        normalized=not body.raw,
        ranking=ranking,
        usage=scores.usage,
        timings=scores.timings,
    )


@router.post("/groups", response_model=GroupsResponse)
async def groups(body: GroupsRequest, request: Request, state: State) -> GroupsResponse:
    """Each group's completions scored (all groups in one batched pass), ranked, and turned
    into GRPO advantages: ``(r - mean) / (std + 1e-4)`` per group with the unbiased std,
    as TRL's GRPOTrainer computes them (``scale="none"``: ``r - mean``)."""
    prompts: list[PromptInput] = []
    responses: list[str] = []
    names: list[str] = []
    for g, group in enumerate(body.groups):
        prompt = prompt_input(group.prompt, f"groups[{g}].prompt")
        for c, completion in enumerate(group.completions):
            prompts.append(prompt)
            responses.append(completion)
            names.append(f"groups[{g}].completions[{c}]")
    scores = await score_with(
        state, request, prompts, responses, names, body.truncate, body.choice()
    )
    shown = rewards(scores, body.raw)
    results, start = [], 0
    for group in body.groups:
        end = start + len(group.completions)
        results.append(group_result(shown[start:end], scores.truncated[start:end], body.scale))
        start = end
    return GroupsResponse(
        model=model_label(state, body.choice()),
        normalized=not body.raw,
        groups=results,
        usage=scores.usage,
        timings=scores.timings,
    )


def group_result(values: list[float], truncated: list[bool], scale: str) -> GroupResult:
    """Ranks (1 = best, ties share the better rank) and advantages of one group."""
    stats = group_stats(values, scale)
    return GroupResult(
        rewards=values,
        ranks=stats.ranks,
        advantages=stats.advantages,
        mean=stats.mean,
        std=stats.std,
        truncated=truncated,
    )


@router.post("/get_reward", response_model=GetRewardResponse, response_model_exclude_none=True)
async def get_reward(body: GetRewardRequest, request: Request, state: State) -> GetRewardResponse:
    """OpenRLHF's remote reward model protocol. Each ``query`` is the policy's prompt +
    response decoded with its special tokens. A query in a known chat format (see
    ``rankrm.formats``) is split back into messages and read as that conversation, through
    the reward model's own chat template when it has one; otherwise, when ``prompts[i]`` is
    a prefix of ``query[i]``, the two are split and encoded as prompt and response; else the
    whole query is scored as it stands. Rewards are normalised. ``extra_logs`` holds, per
    item: ``policy_format`` (the number of the format recognised, 0 for none),
    ``raw_reward``, ``tokens`` and ``truncated`` (0 or 1); for a model with a multi-output
    head, also ``head:NAME`` for each output (raw). With a reward function (``--reward-fn``),
    each reward adds its weighted rule reward, ``extra_logs`` adds ``rule_reward`` (0 where
    there is none) and ``rule_error`` (0 or 1), and ``errors`` says why per sample."""
    if not body.query:
        return GetRewardResponse(rewards=[], scores=[], extra_logs={})
    given = body.prompts or []
    prompts: list[PromptInput] = []
    responses: list[str] = []
    formats: list[float] = []
    for i, query in enumerate(body.query):
        name, turns = parse_conversation(query, state.settings.policy_format)
        formats.append(FORMAT_IDS[name])
        prompt = given[i] if i < len(given) else None
        if turns is not None:
            prompts.append(turns[:-1])
            responses.append(turns[-1]["content"])
        elif prompt and query.startswith(prompt) and query[len(prompt) :].strip():
            prompts.append(prompt)
            responses.append(query[len(prompt) :])
        else:
            prompts.append(None)
            responses.append(query)
    names = [f"query[{i}]" for i in range(len(responses))]
    limit = state.settings.max_reward_items
    scores = await score_in_slices(state, request, prompts, responses, names, limit, body.choice())
    shown = rewards(scores, want_raw=False)
    temperature = state.settings.score_temperature or state.engine.score_temperature
    extra_logs = {
        "policy_format": formats,
        "raw_reward": [float(v) for v in scores.raw],
        "tokens": [float(n) for n in scores.tokens],
        "truncated": [float(t) for t in scores.truncated],
    }
    for name, column in (head_outputs_by_name(scores) or {}).items():
        extra_logs[f"head:{name}"] = column
    errors: list[str | None] | None = None
    if state.rules is not None:
        labels = list(body.labels or []) + [None] * (len(responses) - len(body.labels or []))
        rule_prompts = [given[i] if i < len(given) else None for i in range(len(responses))]
        ruled = await state.rules.score(rule_prompts, responses, labels)
        weight = state.rules.weight
        shown = [
            r + weight * v if v is not None else r for r, (v, _) in zip(shown, ruled, strict=True)
        ]
        extra_logs["rule_reward"] = [v if v is not None else 0.0 for v, _ in ruled]
        extra_logs["rule_error"] = [float(e is not None) for _, e in ruled]
        errors = [e for _, e in ruled]
    calibrated = [_sigmoid(r / temperature) for r in shown]
    return GetRewardResponse(rewards=shown, scores=calibrated, extra_logs=extra_logs, errors=errors)
