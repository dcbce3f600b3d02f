"""The deployment files agree with the code: routes files validate, flags exist, copied paths exist."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.ops.settings import add_proxy_arguments, settings_from
from proxy.routing.table import parse_routes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def k8s_documents() -> list[dict]:  # type: ignore[type-arg]
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_every_manifest_parses_and_names_its_namespace() -> None:
    """Every Kubernetes document parses and lives in the strangler namespace."""
    docs = k8s_documents()
    assert len(docs) >= 9
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "strangler", doc["metadata"]["name"]


def test_shipped_routing_tables_validate() -> None:
    """The ConfigMap's and compose's routes.yaml pass the gateway's own loader."""
    (cm,) = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    table = parse_routes(cm["data"]["routes.yaml"], "routes-configmap.yaml")
    assert set(table.upstreams) == {"legacy", "new"}
    compose = (DEPLOY / "compose-routes.yaml").read_text()
    assert set(parse_routes(compose, "compose-routes.yaml").upstreams) == {"legacy", "new"}


def test_gateway_flags_exist_in_the_cli() -> None:
    """Every flag the manifests pass to `strangler proxy` is one the CLI accepts."""
    (gw,) = [d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway"]
    args = gw["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "proxy"
    help_text = subprocess.run(
        [sys.executable, "-m", "proxy", "proxy", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text, f"{flag} is passed by deploy/k8s/gateway.yaml but not accepted by the CLI"


def test_gateway_deployment_starts_with_its_settings() -> None:
    """The Deployment's args and env make valid settings: its admin port is on the pod IP, so the admin
    token must come from the Secret (without it the gateway refuses to start)."""
    (gw,) = [d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway"]
    container = gw["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "from-the-secret-0123456789") for e in container["env"]}
    assert "STRANGLER_ADMIN_TOKEN" in env
    parser = argparse.ArgumentParser()
    add_proxy_arguments(parser)
    settings = settings_from(parser.parse_args(container["args"][1:]), env)
    assert settings.admin.host == "0.0.0.0" and settings.admin_token


@pytest.mark.parametrize("dockerfile", ["Dockerfile.python", "Dockerfile.legacy"])
def test_dockerfile_copies_paths_that_exist(dockerfile: str) -> None:
    """Each COPY source in the Dockerfiles exists in the repository."""
    for line in (DEPLOY / dockerfile).read_text().splitlines():
        m = re.match(r"COPY (?!--from)(.+) \S+$", line.strip())
        if m:
            for src in m.group(1).split():
                assert (ROOT / src.rstrip("/")).exists(), f"{dockerfile}: COPY {src} does not exist"
