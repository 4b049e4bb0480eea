"""Property-based fuzzing of the running service: no 5xx, no dropped connection, every 4xx
a JSON error, whatever arrives.

* schemathesis generates requests from the service's own OpenAPI schema, valid and
  invalid, and runs all its checks on each answer;
* hypothesis sends arbitrary JSON (any Unicode, lone surrogates and control characters
  included), well-shaped requests with arbitrary text, and arbitrary bytes, to every
  endpoint.

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more and writes the
tally (requests tried, statuses seen) to ``docs/fuzz.json``. ``RANKRM_FUZZ_EXAMPLES`` sets
the count per test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.app.conftest import ControlledEngine, running

EXAMPLES = int(os.environ.get("RANKRM_FUZZ_EXAMPLES", "40"))
REPORT = os.environ.get("RANKRM_FUZZ_REPORT")
PATHS = ["/score", "/compare", "/rank", "/get_reward"]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not REPORT,  # CI: the same examples every run; make fuzz: new ones
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
)
TALLY: Counter[str] = Counter()

# Any code point, lone surrogates (category Cs) and control characters included.
ANY_CHAR = st.characters(codec=None, categories=None)
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
MESSAGES = st.lists(
    st.dictionaries(st.sampled_from(["role", "content", "x"]), ANY_TEXT), max_size=3
)
PROMPT = st.none() | ANY_TEXT | MESSAGES
SHAPED = st.one_of(
    st.builds(lambda t: ("/score", {"texts": t}), st.lists(ANY_TEXT, max_size=4)),
    st.builds(lambda p, r: ("/score", {"items": [{"prompt": p, "response": r}]}), PROMPT, ANY_TEXT),
    st.builds(
        lambda p, a, b: ("/compare", {"pairs": [{"prompt": p, "a": a, "b": b}]}),
        PROMPT,
        ANY_TEXT,
        ANY_TEXT,
    ),
    st.builds(
        lambda p, c, k: ("/rank", {"prompt": p, "candidates": c, "raw": k}),
        PROMPT,
        st.lists(ANY_TEXT, max_size=4),
        st.booleans(),
    ),
    st.builds(
        lambda q, p, labels: ("/get_reward", {"query": q, "prompts": p, "labels": labels}),
        st.lists(ANY_TEXT, max_size=4),
        st.none() | st.lists(ANY_TEXT, max_size=4),
        st.none() | st.lists(JSON, max_size=2),
    ),
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_url(model_dir: Path) -> Iterator[str]:
    from rankrm.runtime import OnnxRewardModel

    engine = ControlledEngine(OnnxRewardModel.load(model_dir))
    with running(engine, max_items=8, max_text_chars=2000, max_body_bytes=64 * 1024) as s:
        yield s.url


@pytest.fixture(scope="module")
def client(fuzz_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    if REPORT:
        path = Path(REPORT)
        totals = TALLY
        path.write_text(
            json.dumps(
                {"requests": sum(totals.values()), "statuses": dict(sorted(totals.items()))},
                indent=2,
            )
            + "\n"
        )


def check_answer(response: httpx.Response) -> None:
    """The contract: never a 5xx; every error a JSON ``{"error", "error_type"}``."""
    TALLY[str(response.status_code)] += 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "error_type"}, body
        assert body["error"] and body["error_type"]


@FUZZ
@given(path=st.sampled_from(PATHS), value=JSON)
def test_arbitrary_json_never_fails_the_service(
    client: httpx.Client, path: str, value: Any
) -> None:
    content = json.dumps(value, ensure_ascii=True).encode()  # lone surrogates as \\u escapes
    check_answer(client.post(path, content=content))


@FUZZ
@given(request=SHAPED)
def test_well_shaped_requests_with_any_text(
    client: httpx.Client, request: tuple[str, dict[str, Any]]
) -> None:
    path, payload = request
    check_answer(client.post(path, content=json.dumps(payload, ensure_ascii=True).encode()))


@FUZZ
@given(path=st.sampled_from([*PATHS, "/health", "/nope"]), data=st.binary(max_size=200))
def test_arbitrary_bytes(client: httpx.Client, path: str, data: bytes) -> None:
    check_answer(client.post(path, content=data))


@pytest.fixture(scope="module")
def api_schema(fuzz_url: str) -> Any:
    # Every schemathesis check. Positive data (valid by the schema) may still be refused for
    # limits the schema cannot express (an empty or whitespace-only text, too many texts for
    # this server's max_items, texts over max_text_chars): those statuses are expected.
    # Negative data is rejected by any 4xx the service documents: 413 included (a request
    # with too many texts is refused for that before its other faults are looked at).
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2XX", 400, 413, 422]},
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 404, 405, 408, 413, 422, 429]
                },
            }
        }
    )
    return schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", config=config)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_schema_with_every_check(api_schema: Any, mode: str) -> None:
    """Cases drawn from every operation of the schema, valid (positive) or violating it
    (negative), each answer run through all of schemathesis' checks."""
    generation = schemathesis.GenerationMode(mode)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    cases = st.one_of([op.as_strategy(generation_mode=generation) for op in operations])

    @FUZZ
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call_and_validate(timeout=30)
        TALLY[str(response.status_code)] += 1
        assert response.status_code < 500

    run()
