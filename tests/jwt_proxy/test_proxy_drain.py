"""SIGTERM on a real proxy process: it keeps listening, says it is going, lets streams finish."""
from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import requests

from helpers import bearer, claims_of, make_token, start_proxy, wait_for
from stub_upstream import stream_chunk

pytestmark = pytest.mark.processes


class Reader(threading.Thread):
    """Reads one streamed answer to its end (or to its cut) in the background."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.first = threading.Event()
        self.body = b""
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with requests.get(self.url, headers=bearer(self.token), stream=True,
                              timeout=60) as response:
                for chunk in response.iter_content(chunk_size=None):
                    self.body += chunk
                    self.first.set()
        except requests.RequestException as exc:
            self.error = exc
        self.first.set()


def test_sigterm_drains_then_exits_once_streams_end(upstream):
    with start_proxy(upstream.url, PROXY_DRAIN_TIMEOUT="120") as proxy:
        token = make_token()
        chunks = 30
        reader = Reader(proxy.url + f"/stream?n={chunks}&delay=0.1&tag=drain", token)
        reader.start()
        assert reader.first.wait(30) and reader.error is None

        proxy.signal(signal.SIGTERM)
        answers = []

        def health_is_503() -> bool:
            answers.append(requests.get(proxy.url + "/health", timeout=10))
            return answers[-1].status_code == 503

        assert wait_for(health_is_503, timeout=15), \
            "the proxy's /health did not turn 503 after SIGTERM"
        health = answers[-1]
        assert health.json() == {"status_code": 503, "message": "the proxy is shutting down"}
        assert int(health.headers["Retry-After"]) > 0

        refused = requests.get(proxy.url + "/echo", headers=bearer(make_token()), timeout=10)
        assert refused.status_code == 503
        assert refused.json()["status_code"] == 503
        assert int(refused.headers["Retry-After"]) > 0

        reader.join(60)
        token_id = claims_of(token)["token_id"]
        assert reader.error is None
        assert reader.body == b"".join(stream_chunk("drain", token_id, i) for i in range(chunks))
        # Well before the 120 s drain timeout: the proxy leaves once nothing is in flight.
        assert proxy.exited(timeout=60), "the proxy did not exit after its last stream ended"
        assert proxy.proc.returncode == 0, proxy.output()


def test_sigterm_with_nothing_in_flight_exits_at_once(upstream):
    with start_proxy(upstream.url, PROXY_DRAIN_TIMEOUT="120") as proxy:
        assert requests.get(proxy.url + "/echo", headers=bearer(make_token()),
                            timeout=10).status_code == 200
        proxy.signal(signal.SIGTERM)
        assert proxy.exited(timeout=60)
        assert proxy.proc.returncode == 0, proxy.output()


def test_drain_timeout_cuts_streams_still_running(upstream):
    with start_proxy(upstream.url, PROXY_DRAIN_TIMEOUT="2") as proxy:
        stream_id = uuid.uuid4().hex
        # 40 s of stream: far longer than the drain.
        reader = Reader(proxy.url + f"/stream?n=400&delay=0.1&id={stream_id}", make_token())
        reader.start()
        assert reader.first.wait(30)
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert proxy.exited(timeout=30)
        reader.join(30)
        assert not reader.is_alive()
        assert reader.error is not None, "a cut stream must not look complete"
        assert time.monotonic() - started < 30
        state = wait_for(lambda: requests.get(upstream.url + "/stub/stats", timeout=5,
                                              params={"id": stream_id}).json()["state"]
                         == "cancelled", timeout=15)
        assert state, "the upstream stream went on after the proxy left"
        assert "outcome=shutdown" in proxy.output()
