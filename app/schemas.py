"""Request and response bodies. Unknown fields are refused (422) so typos do not pass
silently, except on ``/get_reward`` whose callers send what their framework sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from rankrm.encoding import find_unicode_problem, unicode_problem
from rankrm.groups import STD_EPSILON


def _valid_unicode(text: str) -> str:
    problem = unicode_problem(text)
    if problem:
        raise ValueError(problem)
    return text


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]
"""A string that is valid Unicode: lone surrogates are refused with the field named
(see ``rankrm.encoding``); every text field of every request is one."""

ScoredText = Annotated[Text, Field(json_schema_extra={"minLength": 1})]
"""A text that is scored: empty, whitespace-only or invisible-only text is refused (422);
the schema states the part JSON Schema can say."""

NonEmpty = Field(json_schema_extra={"minItems": 1})
"""A list of inputs: an empty one is 400 ``empty_input`` (documented in the schema)."""

ChatMessages = list[dict[Text, Text]]
"""Chat messages, ``{"role", "content"}`` (or ShareGPT's ``{"from", "value"}``)."""

Prompt = Text | ChatMessages | None


class Strict(BaseModel):
    """Refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelChoice:
    """Which model scores a request: one by name, or a weighted sum of several."""

    model: str | None = None
    weights: dict[str, float] | None = None
    raw: bool = False


ModelName = Annotated[
    str | None,
    Field(description="Score with this loaded model (see /info); default: the first."),
]
Weight = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # a number, never true/false
Weights = Annotated[
    dict[Text, Weight] | None,
    Field(
        description="Score with several loaded models: the sum of their normalised rewards "
        "times these weights, by model name."
    ),
]


class Options(Strict):
    """Options every scoring endpoint takes."""

    raw: StrictBool = Field(False, description="Return unnormalised rewards (no offset or scale).")
    truncate: StrictBool = Field(
        True, description="Truncate over-long input; false rejects it with 422 instead."
    )
    model: ModelName = None
    weights: Weights = None

    def choice(self) -> ModelChoice:
        """The model (or weighted models) this request asks for."""
        return ModelChoice(self.model, self.weights, self.raw)


class Item(Strict):
    """A response to a prompt (text or chat messages), or a whole conversation whose last
    message is the assistant's answer."""

    prompt: Prompt = None
    response: ScoredText | None = None
    messages: ChatMessages | None = Field(
        None,
        description="A whole conversation ending with the assistant's answer (instead of "
        "prompt and response); rendered by the model's chat template when it has one.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Item:
        if (self.response is None) == (self.messages is None):
            raise ValueError("give either 'response' (with an optional 'prompt') or 'messages'")
        if self.messages is not None and self.prompt is not None:
            raise ValueError("'messages' holds the whole conversation: no 'prompt' with it")
        return self


class ScoreRequest(Options):
    """Either ``texts`` or ``items``."""

    texts: Annotated[list[ScoredText] | None, NonEmpty] = None
    items: Annotated[list[Item] | None, NonEmpty] = None
    return_heads: StrictBool = Field(
        False,
        description="For a model with a multi-output head: also return each input's raw "
        "outputs by name (`heads`); the reward is their weighted sum (see /info).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ScoreRequest:
        if (self.texts is None) == (self.items is None):
            raise ValueError("give exactly one of 'texts' or 'items'")
        return self


class Timings(BaseModel):
    """Where the request's time went, in milliseconds (queue and inference: worst text)."""

    tokenize_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


class Usage(BaseModel):
    """Work done for the request."""

    texts: int
    tokens: int
    truncated: int


class ScoreResponse(BaseModel):
    """One reward per input, in input order."""

    model: str
    normalized: bool
    rewards: list[float]
    truncated: list[bool] = Field(
        default_factory=list, description="Per input: whether it was cut to fit the model."
    )
    heads: list[dict[str, float]] | None = Field(
        None,
        description="Per input, with return_heads and a multi-output model: each output, raw.",
    )
    usage: Usage
    timings: Timings


class Pair(Strict):
    """Two responses to the same (optional) prompt."""

    prompt: Prompt = None
    a: ScoredText
    b: ScoredText


class CompareRequest(Options):
    """Pairs to compare."""

    pairs: Annotated[list[Pair], NonEmpty]


class Comparison(BaseModel):
    """Both rewards and P(a preferred to b) = sigmoid(raw_a - raw_b)."""

    reward_a: float
    reward_b: float
    p_a_better: float
    truncated: bool = Field(False, description="Whether a or b (with its prompt) was cut.")


class CompareResponse(BaseModel):
    """One comparison per pair, in order."""

    model: str
    normalized: bool
    results: list[Comparison]
    usage: Usage
    timings: Timings


class RankRequest(Options):
    """Candidates for one prompt (best-of-n, rejection sampling)."""

    prompt: Prompt = None
    candidates: Annotated[list[ScoredText], NonEmpty]
    top_k: Annotated[
        StrictInt | None,  # a whole number: never true/false, "2" or 2.5
        Field(None, ge=1, description="Return only the best k candidates."),
    ] = None
    return_texts: StrictBool = Field(False, description="Include each candidate's text.")


class Ranked(BaseModel):
    """A candidate in the ranking."""

    index: Annotated[int, Field(description="Position in the request's candidates.")]
    reward: float
    truncated: bool = Field(False, description="Whether it (with the prompt) was cut.")
    text: str | None = Field(None, description="The candidate, with return_texts.")


GROUP_STD_EPSILON = STD_EPSILON


class Group(Strict):
    """The G completions of one prompt (GRPO's group, best-of-n's candidates)."""

    prompt: Prompt = None
    completions: Annotated[list[ScoredText], NonEmpty]


class GroupsRequest(Options):
    """Groups scored in one batched pass, with group-normalised advantages."""

    groups: Annotated[list[Group], NonEmpty]
    scale: Literal["group", "none"] = Field(
        "group",
        description="Advantages (r - mean) / (std + 1e-4) per group (group, TRL's GRPO "
        "default), or r - mean (none, Dr. GRPO).",
    )


class GroupResult(BaseModel):
    """One group's rewards (in completion order), ranks and advantages."""

    rewards: list[float]
    ranks: list[int] = Field(description="1 = the best completion; ties share a rank.")
    advantages: list[float]
    mean: float
    std: float = Field(description="Unbiased (n - 1) standard deviation; 0 for one completion.")
    truncated: list[bool]


class GroupsResponse(BaseModel):
    """Per group: rewards, ranks and group-normalised advantages."""

    model: str
    normalized: bool
    std_epsilon: float = GROUP_STD_EPSILON
    groups: list[GroupResult]
    usage: Usage
    timings: Timings


class RankResponse(BaseModel):
    """Candidates best first."""

    model: str
    normalized: bool
    ranking: list[Ranked]
    usage: Usage
    timings: Timings


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request: ``query`` holds prompt + response."""

    model_config = ConfigDict(extra="allow")

    query: list[ScoredText]
    prompts: list[Text] | None = None
    labels: list[Any] | None = None
    model: ModelName = None
    weights: Weights = None

    def choice(self) -> ModelChoice:
        """The model (or weighted models) this request asks for."""
        return ModelChoice(self.model, self.weights)

    @model_validator(mode="after")
    def _labels_unicode(self) -> GetRewardRequest:
        problem = find_unicode_problem(self.labels, "labels")
        if problem:
            raise ValueError(problem)
        return self


class GetRewardResponse(BaseModel):
    """OpenRLHF reads ``rewards`` (and ``scores``, ``extra_logs`` in its agent path)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
    errors: list[str | None] | None = Field(
        None,
        description="With a reward function: per sample, why its rule reward is missing "
        "(it raised, timed out or returned a non-number), else null; the sample keeps its "
        "model reward.",
    )


class ErrorBody(BaseModel):
    """Every error: what is wrong (naming the field and index) and its kind."""

    error: str
    error_type: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Nothing to score, or the body is not JSON",
        401: "Missing or wrong API key",
        408: "The body did not arrive within the deadline",
        413: "Body, item count or a text over its limit",
        422: "A field is wrong (the message names it), or over-long input with truncate=false",
        429: "Queue or in-flight budget full: retry after Retry-After seconds",
        503: "Not ready, or the model failed on this batch (retry)",
        504: "Not scored before the request deadline",
    }.items()
}
"""The error statuses every scoring endpoint documents in its OpenAPI schema."""
