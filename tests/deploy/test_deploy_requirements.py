"""The requirement files' pins, and the mock stack (Dockerfile-local) running with none of the
packages requirements-mock.txt leaves out, which is proven by running it with them blocked."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import requests

from deploy_files import healthcheck_command, load_compose
from helpers import GUNICORN, api_server
from inference_api import config as api_config
from inference_api.mock.text import mock_answer
from net import free_port
from processes import REPO, ServerProcess

MODEL = api_config.DEFAULT_MODEL_ID


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
