"""The nginx edge (deploy/nginx): its template, its entrypoint and its image, against the
environment docker-compose.yml gives it."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from deploy_files import (EDGE, PLACEHOLDER, dockerfile, dockerfile_args, exec_form, load_compose,
                          service_env, template_placeholders)
from processes import REPO


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
