"""The deployment files agree with the code: routes files validate, flags exist, copied paths exist."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile.gateway", "Dockerfile.new", "Dockerfile.legacy"])
def test_dockerfile_copies_paths_that_exist(dockerfile: str) -> None:
    """Each COPY source in the Dockerfiles exists in the repository."""
    for line in (DEPLOY / dockerfile).read_text().splitlines():
        m = re.match(r"COPY (?!--from)(.+) \S+$", line.strip())
        if m:
            for src in m.group(1).split():
                assert (ROOT / src.rstrip("/")).exists(), f"{dockerfile}: COPY {src} does not exist"


DEPLOY_BIN = ROOT / ".venv-deploy" / "bin"
# The oldest Kubernetes the manifests support (deploy/README.md): preStop `sleep` is on by default from 1.30.
MIN_KUBERNETES = (1, 30)


def deploy_tool(name: str) -> Path:
    tool = DEPLOY_BIN / name
    if not tool.exists():
        pytest.skip(f"{tool} is missing: `make deploy-tools` installs it (make test does)")
    return tool


def test_checkov_passes_on_deploy() -> None:
    """checkov finds nothing in deploy/ (Kubernetes, Dockerfiles, secrets); every skip carries its reason."""
    argv = [str(deploy_tool("checkov")), "-d", str(DEPLOY), "--compact", "--quiet", "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    results = [r.get("results", {}) for r in reports]
    failed = [(c["check_id"], c["file_path"]) for r in results for c in r.get("failed_checks", [])]
    assert failed == [] and done.returncode == 0, failed
    for r in results:
        for skipped in r.get("skipped_checks", []):
            assert len(skipped.get("check_result", {}).get("suppress_comment", "")) > 20, skipped["check_id"]


def kubernetes_versions() -> list[str]:
    pattern = "lib/python3*/site-packages/kubernetes_validate/kubernetes-json-schema/v*-local"
    schemas = sorted(DEPLOY_BIN.parent.glob(pattern))
    versions = {tuple(int(n) for n in p.name[1:].split("-")[0].split(".")[:2]) for p in schemas}
    return [f"{major}.{minor}.0" for major, minor in sorted(versions) if (major, minor) >= MIN_KUBERNETES]


def test_manifests_validate_from_the_minimum_kubernetes_to_the_newest() -> None:
    """Every manifest in deploy/k8s validates strictly for each Kubernetes version from 1.30 to the newest
    the validator knows, and the stated minimum is real: 1.28 refuses them."""
    tool = deploy_tool("kubernetes-validate")
    versions = kubernetes_versions()
    assert len(versions) >= 5, versions
    files = [str(p) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))]
    for version in versions:
        done = subprocess.run([str(tool), "--strict", "--quiet", "-k", version, *files], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, f"Kubernetes {version}:\n{done.stdout}{done.stderr}"
    older = subprocess.run([str(tool), "--strict", "--quiet", "-k", "1.28.0", *files], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert older.returncode != 0 and "sleep" in older.stdout + older.stderr
    assert "1.30" in (DEPLOY / "README.md").read_text()


def test_images_are_pinned_to_the_release_version() -> None:
    """No `:latest`: every image in the manifests and compose is one of ours at the package's version, or a
    versioned public image."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = [c["image"] for d in k8s_documents() if d["kind"] in ("Deployment", "Job")
              for c in d["spec"]["template"]["spec"]["containers"]]  # fmt: skip
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    images += [s["image"] for s in compose["services"].values()]
    assert images and not [i for i in images if ":" not in i or i.endswith(":latest")]
    ours = [i for i in images if i.startswith("strangler-")]
    assert ours and all(i.endswith(f":{version}") for i in ours), ours


def test_security_context_on_every_workload() -> None:
    """Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, seccomp."""
    for d in k8s_documents():
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] and ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"], d["metadata"]["name"]


def metric_names_in_code() -> set[str]:
    """Every string literal that could name a metric in the gateway, the new service and the legacy app."""
    names: set[str] = set()
    sources = [*(ROOT / "proxy").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    for path in [*sources, *(ROOT / "legacy" / "src").rglob("*.js")]:
        names.update(re.findall(r"[\"']([a-z][a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_alerts_and_dashboard_use_metrics_that_exist() -> None:
    """Each metric an alert or a dashboard panel queries is one the code exports (a renamed metric would
    otherwise silence its alert)."""
    rules = yaml.safe_load((DEPLOY / "monitoring" / "prometheusrule.yaml").read_text())
    exprs = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]}
    assert {"StranglerRoutesReloadFailed", "StranglerShadowDropping", "StranglerHigh5xxRate",
            "StranglerUpstreamDown", "StranglerDiffRateJump"} <= alerts  # fmt: skip
    known = metric_names_in_code()
    metric = r"\b([a-z][a-z0-9_]*(?:_total|_bucket|_seconds|_in_use|_waiting|_max|_info)|strangler_[a-z_]+)\b"
    used = {re.sub(r"_(total|bucket|count|sum)$", "", m) for e in exprs for m in re.findall(metric, e)}
    missing = sorted(m for m in used if m not in known)
    assert used and missing == [], missing
