"""Several reward models in one service: pick one by name, or a weighted sum."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from rankrm.runtime import OnnxRewardModel
from tests.app.conftest import ControlledEngine, Server, running

TEXTS = ["good", "the movie was very good", "awful", "it was not good"]


@pytest.fixture(scope="module")
def second_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny model (its own random weights), exported as "second"."""
    from tests.conftest import build_tiny_backbone, checkpoint_of, texts_file
    from training.export import ExportConfig, export_model

    tmp = tmp_path_factory.mktemp("second")
    checkpoint = checkpoint_of(build_tiny_backbone(tmp / "bb"), tmp / "ckpt")
    out = tmp / "model"
    export_model(
        ExportConfig(checkpoint, out, reference=texts_file(tmp / "r.jsonl"), name="second")
    )
    return out


@pytest.fixture(scope="module")
def two(model_dir: Path, second_dir: Path) -> Iterator[Server]:
    first = ControlledEngine(OnnxRewardModel.load(model_dir))
    second = ControlledEngine(OnnxRewardModel.load(second_dir))
    with running(first, others={"second": second}) as server:
        yield server


def alone(folder: Path, texts: list[str]) -> list[float]:
    model = OnnxRewardModel.load(folder)
    raw = model.run_encodings(model.encode([None] * len(texts), texts))
    return [float(v) for v in model.normalize(raw)]


def score(server: Server, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/score", json={"texts": TEXTS, **body}, timeout=30)


def test_requests_pick_a_model_by_name(two: Server, model_dir: Path, second_dir: Path) -> None:
    default = score(two).json()
    assert default["model"] == "model"
    assert default["rewards"] == pytest.approx(alone(model_dir, TEXTS), rel=1e-3, abs=1e-8)
    second = score(two, model="second").json()
    assert second["model"] == "second"
    assert second["rewards"] == pytest.approx(alone(second_dir, TEXTS), rel=1e-3, abs=1e-8)
    assert second["rewards"] != default["rewards"]  # another model, other rewards


def test_a_weighted_sum_of_normalised_rewards(
    two: Server, model_dir: Path, second_dir: Path
) -> None:
    answer = score(two, weights={"model": 0.25, "second": 0.75}).json()
    expected = [
        0.25 * a + 0.75 * b
        for a, b in zip(alone(model_dir, TEXTS), alone(second_dir, TEXTS), strict=True)
    ]
    assert answer["rewards"] == pytest.approx(expected, rel=1e-3, abs=1e-8)
    assert answer["model"] == "0.25 * model + 0.75 * second"
    reward = httpx.post(
        f"{two.url}/get_reward", json={"query": TEXTS, "weights": {"model": 0.25, "second": 0.75}}
    ).json()
    assert reward["rewards"] == pytest.approx(expected, rel=1e-3, abs=1e-8)
    info = httpx.get(f"{two.url}/info").json()
    assert sorted(info["models"]) == ["model", "second"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "third"}, "model: no model named 'third'; loaded: model, second"),
        ({"weights": {"model": 1, "third": 1}}, "weights.third: no model named 'third'"),
        ({"weights": {"model": 1}, "raw": True}, "raw rewards of a weighted sum"),
        ({"weights": {"model": 1}, "model": "model"}, "give 'model' or 'weights', not both"),
    ],
)
def test_bad_model_choices_are_422_naming_the_field(
    two: Server, body: dict[str, object], problem: str
) -> None:
    answer = score(two, **body)
    assert answer.status_code == 422, answer.text
    assert problem in answer.json()["error"]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"models": "a"}, "models[0]: 'a' is not NAME=DIR"),
        ({"models": "a=x,a=y"}, "models[1]: the name 'a' is given twice"),
        ({"models": "a=x", "weights": "a=lots"}, "weights[0]: 'lots' is not a number"),
        ({"models": "a=x", "weights": "b=1"}, "weights name b, not among the models (a)"),
    ],
)
def test_model_settings_are_checked(settings: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Settings(**settings)  # type: ignore[arg-type]


def test_configured_weights_answer_requests_that_name_no_model(
    model_dir: Path, second_dir: Path
) -> None:
    first = ControlledEngine(OnnxRewardModel.load(model_dir))
    second = ControlledEngine(OnnxRewardModel.load(second_dir))
    weights = "model=1,second=-1"
    with running(first, others={"second": second}, weights=weights) as server:
        answer = score(server).json()
        one = score(server, model="second").json()
    expected = [
        a - b for a, b in zip(alone(model_dir, TEXTS), alone(second_dir, TEXTS), strict=True)
    ]
    assert answer["rewards"] == pytest.approx(expected, rel=1e-3, abs=1e-8)
    assert one["rewards"] == pytest.approx(alone(second_dir, TEXTS), rel=1e-3, abs=1e-8)


def test_models_load_from_their_folders_under_the_names_given(
    model_dir: Path, second_dir: Path
) -> None:
    from app.main import create_app

    settings = Settings(models=[f"b={second_dir}", f"a={model_dir}"], model_workers=1)
    app = create_app(settings)
    assert list(app.state.service.models) == ["b", "a"]  # the first is the default
    assert app.state.service.engine.name == "second"


def test_metrics_are_labelled_by_model(two: Server) -> None:
    score(two)
    score(two, model="second")
    metrics = httpx.get(f"{two.url}/metrics").text
    for name in ("model", "second"):
        assert f'rankrm_texts_total{{model="{name}"}}' in metrics
        assert f'rankrm_batch_size_count{{model="{name}"}}' in metrics


@pytest.mark.parametrize("weight", [False, True, "1", None])
def test_a_weight_that_is_not_a_number_is_422(server: Server, weight: object) -> None:
    """Found by the long fuzz run: ``{"k": false}`` was read as 0.0 and answered 200."""
    for path, body in (("/get_reward", {"query": []}), ("/score", {"texts": ["good"]})):
        answer = httpx.post(f"{server.url}{path}", json={**body, "weights": {"k": weight}})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error_type"] == "invalid_request"
        assert "weights.k" in answer.json()["error"]
