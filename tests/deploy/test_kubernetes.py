"""The container and Kubernetes files agree with the app: probes, ports, image, settings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import ops
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((K8S / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    spec = load("deployment.yaml")["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return {"pod": spec, **only}


def test_probes_hit_the_apps_endpoints(container: dict[str, Any]) -> None:
    paths = {route.path for route in ops.router.routes}  # type: ignore[attr-defined]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in paths
        assert container[probe]["httpGet"]["port"] == "http"


def test_ports_agree_everywhere(container: dict[str, Any]) -> None:
    (port,) = container["ports"]
    assert port["name"] == "http"
    default_port = Settings.model_fields["port"].default
    assert port["containerPort"] == default_port
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {default_port}" in dockerfile
    assert f"RANKRM_PORT={default_port}" in dockerfile
    (service_port,) = load("service.yaml")["spec"]["ports"]
    assert service_port["targetPort"] == "http"


def test_image_name_matches_the_build_and_the_version(container: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"rankrm:{version}"
    assert f"docker build -t rankrm:{version} ." in (ROOT / "Dockerfile").read_text()
    assert f"rankrm:{version}" in (ROOT / "docs" / "deployment.md").read_text()


def test_configmap_holds_only_real_settings() -> None:
    data = load("configmap.yaml")["data"]
    known = {f"RANKRM_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= known
    Settings(**{k.removeprefix("RANKRM_").lower(): v for k, v in data.items()})  # valid values


def test_shutdown_gives_requests_time_to_finish(container: dict[str, Any]) -> None:
    command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    delay = float(re.search(r"sleep\((\d+)\)", command).group(1))  # type: ignore[union-attr]
    timeout = float(load("configmap.yaml")["data"]["RANKRM_REQUEST_TIMEOUT_S"])
    assert container["pod"]["terminationGracePeriodSeconds"] > delay + timeout


def test_resources_and_non_root(container: dict[str, Any]) -> None:
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert container["pod"]["securityContext"]["runAsNonRoot"] is True
    assert "USER rankrm" in (ROOT / "Dockerfile").read_text()


def test_autoscaler_targets_the_deployment() -> None:
    hpa = load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == load("deployment.yaml")["metadata"]["name"]
    assert hpa["minReplicas"] >= 2


def test_dockerfile_is_multi_stage_without_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") == 2
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert "torch" not in dockerfile.replace("no torch", "")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", "runs", "tests"):
        assert path in ignored
