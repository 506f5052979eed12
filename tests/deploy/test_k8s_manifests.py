"""deploy/k8s checked offline: every object against the Kubernetes schemas of the versions we
target, and what the manifests must agree on with each other and with the code."""
from __future__ import annotations

import re
import runpy
from dataclasses import fields
from pathlib import Path

import pytest
import requests
import yaml

from inference_api.config import Config
from processes import REPO
from proxy.config import ProxyConfig

K8S = REPO / "deploy" / "k8s"
# The oldest release we support and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
NOT_OBJECTS = {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
# Read by the server outside Config: the kernel's cache base, and the hub's offline switch.
OTHER_API_VARIABLES = {"XDG_CACHE_HOME", "HF_HUB_OFFLINE"}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_OBJECTS)


def objects() -> list[dict]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text())
            if doc]


def the(kind: str, name: str) -> dict:
    found = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


API = "inference-api"
PROXY = "inference-proxy"


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config_env(deployment: dict) -> dict[str, str]:
    """The container's environment: its ConfigMaps' data, then its own plain values."""
    env = {}
    for source in container(deployment).get("envFrom", []):
        env.update(the("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container(deployment).get("env", [])
                if "value" in e})
    return env


def port_named(deployment: dict, name: str) -> int:
    return next(p["containerPort"] for p in container(deployment)["ports"] if p["name"] == name)


def pre_stop_seconds(deployment: dict) -> int:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def graceful_timeout(conf: Path, env: dict[str, str], monkeypatch) -> int:
    """gunicorn's graceful_timeout as its config file computes it from env."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(conf))["graceful_timeout"]


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_object_is_valid_for_the_targeted_kubernetes(path, version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (requirements_dev.txt)")
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        # strict: an unknown or misspelt field is an error, not silently dropped by the API.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in manifest_files()]


# --- what the objects must agree on ------------------------------------------------------------


def test_api_probes_ask_the_container_port_and_liveness_is_not_health():
    api = the("Deployment", API)
    spec = container(api)
    assert port_named(api, "http") == int(config_env(api)["SERVICE_PORT"])
    for probe in ("startupProbe", "readinessProbe"):
        assert spec[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    # A backend restarting makes /health 503; the server repairs that itself.
    assert spec["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "http"}


def test_the_startup_probe_outlasts_the_backend_start_timeout():
    api = the("Deployment", API)
    startup = container(api)["startupProbe"]
    start_timeout = float(config_env(api).get("BACKEND_START_TIMEOUT_S",
                                              Config.backend_start_timeout_s))
    assert startup["periodSeconds"] * startup["failureThreshold"] > start_timeout


def test_liveness_and_readiness_paths_answer_on_a_running_server(mock_server):
    spec = container(the("Deployment", API))
    for probe in ("readinessProbe", "livenessProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert requests.get(mock_server.url + path, timeout=5).status_code == 200, path


@pytest.mark.parametrize("name, conf, drain_variable", [
    (API, REPO / "gunicorn.conf.py", "DRAIN_TIMEOUT_S"),
    (PROXY, REPO / "proxy" / "gunicorn.conf.py", "PROXY_DRAIN_TIMEOUT"),
])
def test_the_grace_period_covers_pre_stop_and_the_drain(name, conf, drain_variable, monkeypatch):
    deployment = the("Deployment", name)
    env = config_env(deployment)
    drain = float(env[drain_variable])
    gunicorn_wait = graceful_timeout(conf, {**env, "JWT_SECRET": "x" * 32}, monkeypatch)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert gunicorn_wait >= drain
    assert grace > pre_stop_seconds(deployment) + gunicorn_wait


@pytest.mark.parametrize("name", [API, PROXY])
def test_the_disruption_budget_selects_the_deployment_pods(name):
    deployment = the("Deployment", name)
    budget = the("PodDisruptionBudget", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_the_autoscaler_targets_the_api_deployment():
    hpa = the("HorizontalPodAutoscaler", API)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", API)
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB lets one go


def test_the_autoscaler_metrics_come_from_series_the_server_exports(mock_server):
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    wanted = {m["pods"]["metric"]["name"]
              for m in the("HorizontalPodAutoscaler", API)["spec"]["metrics"]}
    assert wanted <= served
    exported = set(re.findall(r"^(\w+)", requests.get(mock_server.url + "/metrics", timeout=5)
                              .text, flags=re.M))
    for rule in rules:
        series = set(re.findall(r"\b(inference_\w+)\{", rule["seriesQuery"] + rule["metricsQuery"]))
        assert series and series <= exported, series - exported


def test_the_api_service_stays_inside_the_cluster():
    service = the("Service", API)
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not service["spec"].get("externalIPs")
    assert all("nodePort" not in port for port in service["spec"]["ports"])
    api = the("Deployment", API)
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()
    # Only the proxy pods may connect to the API pods.
    policy = the("NetworkPolicy", API)
    assert policy["spec"]["podSelector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    proxy_labels = the("Deployment", PROXY)["spec"]["template"]["metadata"]["labels"]
    pod_sources = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]
                   for peer in rule["from"] if "podSelector" in peer]
    assert pod_sources and all(src.items() <= proxy_labels.items() for src in pod_sources)


def test_the_proxy_is_exposed_and_points_at_the_api_service():
    service = the("Service", PROXY)
    assert service["spec"]["type"] in ("LoadBalancer", "NodePort")
    proxy = the("Deployment", PROXY)
    assert service["spec"]["selector"].items() <= \
        proxy["spec"]["template"]["metadata"]["labels"].items()
    env = config_env(proxy)
    api_port = the("Service", API)["spec"]["ports"][0]["port"]
    assert env["UPSTREAM_URL"] == f"http://{API}:{api_port}"
    assert port_named(proxy, "http") == int(env["PROXY_PORT"])


def test_proxy_metrics_are_on_their_own_port_that_the_service_does_not_expose():
    proxy = the("Deployment", PROXY)
    env = config_env(proxy)
    metrics_port = port_named(proxy, "metrics")
    assert metrics_port == int(env["PROXY_METRICS_PORT"]) != int(env["PROXY_PORT"])
    assert env["PROXY_METRICS_HOST"] == "0.0.0.0"  # the kubelet and Prometheus reach the pod IP
    assert container(proxy)["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    annotations = proxy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    exposed = {p.get("targetPort") for p in the("Service", PROXY)["spec"]["ports"]}
    assert exposed == {"http"}
    policy = the("NetworkPolicy", PROXY)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        proxy["spec"]["template"]["metadata"]["labels"].items()
    for rule in policy["spec"]["ingress"]:
        if {"port": "metrics"} in rule["ports"]:
            assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"])


def test_jwt_secret_comes_from_the_secret_only():
    proxy = container(the("Deployment", PROXY))
    (entry,) = [e for e in proxy["env"] if e["name"] == "JWT_SECRET"]
    ref = entry["valueFrom"]["secretKeyRef"]
    secret = the("Secret", ref["name"])
    assert ref["key"] in secret.get("stringData", {}) or ref["key"] in secret.get("data", {})
    for config_map in (o for o in objects() if o["kind"] == "ConfigMap"):
        assert "JWT_SECRET" not in config_map["data"]
    assert "JWT_SECRET" not in config_env(the("Deployment", API))


def test_config_maps_hold_only_settings_the_code_reads():
    api_variables = {f.name.upper() for f in fields(Config)} | OTHER_API_VARIABLES
    proxy_variables = {f.metadata["env"] for f in fields(ProxyConfig)}
    assert set(config_env(the("Deployment", API))) <= api_variables
    assert set(config_env(the("Deployment", PROXY))) <= proxy_variables


@pytest.mark.parametrize("name", [API, PROXY])
def test_every_container_has_resource_requests_and_limits(name):
    resources = container(the("Deployment", name))["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[bound].keys(), bound
