"""A backend killed on the real model comes back from what the dead one left: the restarted
process maps the weight cache instead of converting the model again, and it answers a greedy
request as the first process did."""
from __future__ import annotations

import signal

import pytest
import requests

from helpers import api_server, backend_process, post, wait_for

pytestmark = pytest.mark.slow

CACHED = "(weights from the weight cache)"  # the backend's load line, when it mapped the cache


def greedy_text(server, prompt: str, n: int) -> str:
    response = post(server, {"text": prompt, "max_tokens": n, "temperature": 0}, timeout=120)
    assert response.status_code == 200, response.text
    return response.text  # the answer's text, as a plain-text body


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_a_killed_backend_restarts_from_the_cache_and_answers_as_before(dtype):
    with api_server({"MOCK_MODEL": "0", "DTYPE": dtype, "MAX_SEQ_LEN": "512",
                     "MAX_USERS": "4"}) as server:
        server.wait_healthy(600)
        before = [greedy_text(server, p, 12) for p in ("The capital of France is", "Hi")]
        loads_from_cache = server.output().count(CACHED)
        old = backend_process(server)
        old.send_signal(signal.SIGKILL)
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 503, 10)
        assert wait_for(lambda: requests.get(server.url + "/health").status_code == 200, 300)
        assert backend_process(server).pid != old.pid
        # Whatever the first start found, the restart mapped the weights the first one cached.
        assert server.output().count(CACHED) == loads_from_cache + 1, server.output()
        assert [greedy_text(server, p, 12) for p in ("The capital of France is", "Hi")] == before
        assert all(before)
