"""What the deployment tests read: the settings the code reads, the compose files and the
Dockerfiles, parsed without a Docker engine. Shared by tests/deploy/test_deploy_*.py; no tests
here."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from common.settings import parse
from inference_api import config as api_config
from processes import REPO
from proxy import config as proxy_config

SOURCES = [*REPO.glob("inference-api/**/*.py"), *REPO.glob("proxy/*.py"), *REPO.glob("common/*.py"),
           *REPO.glob("scripts/*.py"),
           REPO / "gunicorn.conf.py"]
# Read by docker-compose.yml only (build arguments, resource limits), with compose's defaults.
DEPLOY_VARIABLES = {"BASE_IMAGE": "python:3.11-slim", "TORCH_SOURCE": "pytorch",
                    "TORCH_VARIANT": "cpu", "API_CPUS": "2", "API_MEMORY": "4G",
                    "PROXY_CPUS": "1", "PROXY_MEMORY": "512M", "EDGE_CPUS": "1",
                    "EDGE_MEMORY": "256M"}
EDGE = REPO / "deploy" / "nginx"


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


# ---------------------------------------------------------------------------------------------
# Dockerfiles


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


def healthcheck_command(name: str) -> list[str]:
    args = [args for instruction, args in dockerfile(REPO / name) if instruction == "HEALTHCHECK"][-1]
    command = exec_form(args.split(" CMD ", 1)[1].strip())
    assert "/health" in " ".join(command)
    return command


# ---------------------------------------------------------------------------------------------
# The nginx edge's template

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def template_placeholders() -> set[str]:
    template = EDGE / "nginx.conf.template"
    lines = [line for line in template.read_text().splitlines() if not line.lstrip().startswith("#")]
    return set(PLACEHOLDER.findall("\n".join(lines)))
