"""docker-compose.yml and docker-compose.mock.yml against the code's settings and the images,
without a Docker engine (and with the installed compose, where there is one)."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from deploy_files import (DEPLOY_VARIABLES, SUBST, all_variables, api_settings, dockerfile_args,
                          dockerfile_env, interpolate, load_compose, other_env_reads,
                          proxy_settings, same_as_default, service_env, template_placeholders)
from processes import REPO

# The services running this project's code; the edge runs nginx.
CODE_SERVICES = ("inference-api", "proxy")
WITH_SECRET = {"JWT_SECRET": "s" * 40}


def test_compose_has_the_three_services_and_the_cache_volume():
    compose = load_compose()
    assert set(compose["services"]) == {"inference-api", "proxy", "edge"}
    assert set(compose["volumes"]) == {"model-cache"}


def test_compose_environment_names_only_real_settings():
    services = load_compose()["services"]
    overlay = load_compose("docker-compose.mock.yml")["services"]
    allowed = {"inference-api": set(api_settings()) | set(other_env_reads()),
               "proxy": set(proxy_settings()), "edge": template_placeholders()}
    for source in (services, overlay):
        for name, service in source.items():
            unknown = set(service.get("environment") or {}) - allowed[name]
            assert not unknown, f"{name} sets variables the code does not read: {sorted(unknown)}"


def test_compose_substitutions_pass_each_variable_to_itself_with_the_code_default():
    for file in ("docker-compose.yml", "docker-compose.mock.yml"):
        for name, service in load_compose(file)["services"].items():
            if name not in CODE_SERVICES:
                continue
            for key, value in (service.get("environment") or {}).items():
                match = SUBST.fullmatch(str(value))
                if not match:
                    continue
                assert match[1] == key, f"{file}: {name}.{key} reads ${{{match[1]}}}"
                if match[2] == ":-":
                    assert same_as_default(key, match[3]), \
                        f"{file}: {name}.{key} falls back to {match[3]!r}, not the code's default"


def test_every_setting_in_dotenv_reaches_its_service():
    # A variable put in .env must take effect: compose passes each setting on, except the
    # few it fixes because the containers' layout decides them.
    fixed = {"MODEL_CACHE_DIR", "UPSTREAM_URL", "PROXY_HOST", "PROXY_METRICS_HOST"}
    services = load_compose()["services"]
    for name, settings in (("inference-api", api_settings()), ("proxy", proxy_settings())):
        passed = set(services[name]["environment"])
        missing = set(settings) - passed - fixed
        assert not missing, f"{name} does not pass on: {sorted(missing)}"
    variables = set(SUBST.findall((REPO / "docker-compose.yml").read_text()))
    referenced = {v[0] for v in variables}
    assert referenced - set(all_variables()) == set(DEPLOY_VARIABLES)


@pytest.mark.parametrize("environ", [{}, {"SERVICE_PORT": "7100", "PROXY_PORT": "1300",
                                          "PROXY_METRICS_PORT": "1301"}],
                         ids=["defaults", "overridden"])
def test_compose_ports_follow_the_settings(environ):
    environ = {**WITH_SECRET, **environ}
    api_port = environ.get("SERVICE_PORT", str(api_settings()["SERVICE_PORT"]))
    proxy_port = environ.get("PROXY_PORT", str(proxy_settings()["PROXY_PORT"]))
    services = load_compose()["services"]
    api, proxy, edge = services["inference-api"], services["proxy"], services["edge"]

    # The API and the proxy are reachable only on the compose network, on their own ports.
    assert "ports" not in api and "ports" not in proxy
    assert [interpolate(p, environ) for p in api["expose"]] == [api_port]
    assert service_env(api, environ)["SERVICE_PORT"] == api_port
    metrics_port = environ.get("PROXY_METRICS_PORT", str(proxy_settings()["PROXY_METRICS_PORT"]))
    assert [interpolate(p, environ) for p in proxy["expose"]] == [proxy_port, metrics_port]

    # The proxy forwards to the edge's internal port, which stands in for the API's.
    env = service_env(proxy, environ)
    assert env["PROXY_PORT"] == proxy_port
    # The proxy's metrics are on another port, which the edge never routes to.
    assert env["PROXY_METRICS_PORT"] == metrics_port and env["PROXY_METRICS_HOST"] == "0.0.0.0"
    assert f":{metrics_port}" not in " ".join(service_env(edge, environ).values())
    assert env["UPSTREAM_URL"] == f"http://edge:{api_port}"
    assert env["JWT_SECRET"] == environ["JWT_SECRET"]

    # The edge is published on the proxy's port and passes to the proxy; its internal server
    # listens on the API's port and spreads over the API service's replicas.
    assert [interpolate(p, environ) for p in edge["ports"]] == [f"{proxy_port}:{proxy_port}"]
    env = service_env(edge, environ)
    assert env["PUBLIC_PORT"] == proxy_port
    assert env["PROXY_UPSTREAM"] == f"proxy:{proxy_port}"
    assert env["INTERNAL_PORT"] == api_port
    servers = re.findall(r"server (\S+) max_fails=\d+ fail_timeout=\d+s;", env["API_UPSTREAM_SERVERS"])
    assert servers == [f"inference-api:{api_port}"]


def test_compose_requires_the_jwt_secret():
    with pytest.raises(KeyError, match="JWT_SECRET"):
        service_env(load_compose()["services"]["proxy"], {})


def test_compose_health_checks_use_each_services_own_port_setting():
    services = load_compose()["services"]
    for name, variable in (("inference-api", "SERVICE_PORT"), ("proxy", "PROXY_PORT")):
        command = " ".join(services[name]["healthcheck"]["test"])
        assert "/health" in command
        reads = re.findall(r"os\.environ\.get\('(\w+)', '(\d+)'\)", command)
        assert reads == [(variable, str(all_variables()[variable]))], (name, reads)


def test_compose_startup_order_restarts_limits_and_drain_time():
    services = load_compose()["services"]
    assert services["proxy"]["depends_on"]["inference-api"]["condition"] == "service_healthy"
    # nginx resolves the replicas' and the proxy's names once, at start.
    assert services["edge"]["depends_on"] == {"inference-api": {"condition": "service_healthy"},
                                              "proxy": {"condition": "service_started"}}
    # docker-compose 1.29 knows only `condition` in depends_on (no `restart`, no `required`).
    for service in services.values():
        for dependency in (service.get("depends_on") or {}).values():
            assert set(dependency) == {"condition"}
    for name, service in services.items():
        assert service["restart"] in ("always", "unless-stopped", "on-failure"), name
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), name
        assert service["healthcheck"]["test"][0] == "CMD", name
    # Docker's stop timeout must outlast each gunicorn's drain, or streams are cut by SIGKILL.
    assert seconds(services["inference-api"]["stop_grace_period"]) > \
        api_settings()["DRAIN_TIMEOUT_S"]
    proxy_graceful = int(re.search(r"^graceful_timeout = (\d+)$",
                                   (REPO / "proxy/gunicorn.conf.py").read_text(), re.M)[1])
    assert seconds(services["proxy"]["stop_grace_period"]) > proxy_graceful


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_volumes_and_cache_dir_agree():
    compose = load_compose()
    for file in ("docker-compose.yml", "docker-compose.mock.yml"):
        for name, service in load_compose(file)["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith((".", "/")):
                    assert (REPO / source).exists(), f"{file}: {name} mounts missing {source}"
                else:
                    assert source in compose["volumes"], f"{file}: {name} uses undeclared {source}"
    api = compose["services"]["inference-api"]
    cache = service_env(api, {})["MODEL_CACHE_DIR"]
    assert f"model-cache:{cache}" in api["volumes"]
    # The image converted the model into the same folder, which seeds the empty volume.
    assert dockerfile_env(REPO / "Dockerfile")["MODEL_CACHE_DIR"] == cache


def test_compose_builds_the_production_image_and_runs_the_proxy_from_it():
    services = load_compose()["services"]
    for name in CODE_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["build"]["args"] == {"BASE_IMAGE": "${BASE_IMAGE:-python:3.11-slim}",
                                            "TORCH_SOURCE": "${TORCH_SOURCE:-pytorch}",
                                            "TORCH_VARIANT": "${TORCH_VARIANT:-cpu}"}
    assert services["proxy"]["image"] == services["inference-api"]["image"]
    config_file = services["proxy"]["command"][-1]
    assert services["proxy"]["command"] == ["gunicorn", "--config", config_file]
    assert (REPO / config_file).is_file()


def test_mock_overlay_runs_the_local_image_with_the_repository_mounted():
    base = load_compose()["services"]
    overlay = load_compose("docker-compose.mock.yml")["services"]
    assert set(overlay) <= set(base)
    for name, service in overlay.items():
        assert service["build"]["dockerfile"] == "Dockerfile-local"
        assert (REPO / service["build"]["dockerfile"]).is_file()
        # Another tag, or building the mock stack would overwrite the production image.
        assert service["image"] != base[name]["image"]
        assert ".:/app" in service["volumes"]
    assert service_env(overlay["inference-api"], {})["MOCK_MODEL"] == "1"



def test_compose_build_arguments_are_all_declared_by_the_dockerfiles():
    """Compose merges build args of docker-compose.yml into the overlay's: an argument that
    Dockerfile-local did not declare would be reported as not consumed."""
    base = load_compose()["services"]
    overlay = load_compose("docker-compose.mock.yml")["services"]
    for name, service in base.items():
        build = service["build"]
        merged = {**build, **overlay.get(name, {}).get("build", {})}
        for build_config in (build, merged):
            path = REPO / build_config["context"] / build_config.get("dockerfile", "Dockerfile")
            unused = set(build.get("args", {})) - set(dockerfile_args(path))
            assert not unused, f"{name}: {path.name} does not declare {sorted(unused)}"


def cpus_by_default(service: dict) -> float:
    return float(interpolate(service["deploy"]["resources"]["limits"]["cpus"], {}))


def test_compose_limits_fit_a_two_core_host_and_come_from_the_environment():
    for file in ("docker-compose.yml", "docker-compose.mock.yml"):
        for name, service in load_compose(file)["services"].items():
            if "deploy" in service:
                assert 0 < cpus_by_default(service) <= 2, (file, name)
    limits = {name: service["deploy"]["resources"]["limits"]
              for name, service in load_compose()["services"].items()}
    prefix = {"inference-api": "API", "proxy": "PROXY", "edge": "EDGE"}
    for name, limit in limits.items():
        assert SUBST.fullmatch(limit["cpus"])[1] == f"{prefix[name]}_CPUS"
        assert SUBST.fullmatch(limit["memory"])[1] == f"{prefix[name]}_MEMORY"
    environ = {"API_CPUS": "8", "API_MEMORY": "16G"}
    assert interpolate(limits["inference-api"]["cpus"], environ) == "8"
    assert interpolate(limits["inference-api"]["memory"], environ) == "16G"


def installed_compose() -> list[list[str]]:
    found = []
    for argv in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*argv, "version"], capture_output=True, timeout=30).returncode == 0:
                found.append(argv)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return found


@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.mock.yml"]],
                         ids=["production", "mock"])
def test_compose_files_are_accepted_by_the_installed_compose(files, tmp_path):
    commands = installed_compose()
    if not commands:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **WITH_SECRET}
    for argv in commands:
        args = [a for f in files for a in ("-f", str(REPO / f))]
        result = subprocess.run([*argv, *args, "config"], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, (argv, result.stderr)
        config = yaml.safe_load(result.stdout)
        for name, service in config["services"].items():
            assert float(service["deploy"]["resources"]["limits"]["cpus"]) <= 2, (argv, name)
        assert "ports" not in config["services"]["inference-api"]
