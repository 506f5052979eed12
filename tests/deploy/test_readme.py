"""README's "Try it" block, pasted into a shell as a new user would, works and stops cleanly."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from net import free_port, port_open
from processes import REPO

pytestmark = [pytest.mark.slow, pytest.mark.processes]


def try_it_block() -> str:
    """The first sh block under the README's "## Try it" heading."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Try it\n", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_try_it_block_runs_in_a_shell_and_stops(tmp_path):
    api_port, proxy_port = free_port(), free_port()
    # The block's own ports may be taken on a developer's machine: the same block on free ones.
    block = try_it_block().replace(":1223", f":{proxy_port}")
    script = tmp_path / "try_it.sh"
    # -m: job control as in a terminal, so `kill %1` stops the whole job as it would there.
    script.write_text("set -m -e\n" + block + "wait\n")
    result = subprocess.run(["bash", str(script)], cwd=REPO, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "SERVICE_PORT": str(api_port),
                                              "PROXY_PORT": str(proxy_port),
                                              "PROXY_METRICS_PORT": str(free_port())})
    out = result.stdout
    assert result.returncode == 0, (out[-2000:], result.stderr[-2000:])
    # The two answers (a sampled one, then a greedy one) come before the health check's JSON.
    answers = out.split("Chat in the browser", 1)[-1].split("\n", 1)[-1].split('{"status"')[0]
    assert len(answers.strip()) >= 40, out[-2000:]
    assert '{"status":"ok"' in out and '"team_id": "me"' in out, out[-2000:]
    assert not port_open(api_port) and not port_open(proxy_port)
