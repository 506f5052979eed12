"""The nginx edge of deploy/nginx run for real on loopback, in front of mock API replicas and a
real proxy: spreading, streaming, slow clients, and replicas that die, load or drain.

Needs the nginx binary (Debian: nginx-light); without it these tests skip and say so.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

from helpers import MODEL, api_server, bearer, make_token, scrape, start_proxy, wait_for
from net import SocketServer, connect, free_port, head_received, read_until
from nginx_edge import NGINX, NO_NGINX, Edge, StubReplica, mock_replicas, server_lines
from render_nginx import PLACEHOLDERS, TEMPLATE, render


def needs_nginx(test):
    """A test that runs nginx (and servers of its own): skipped, saying why, without nginx."""
    return pytest.mark.processes(pytest.mark.skipif(NGINX is None, reason=NO_NGINX)(test))


MOCK = {"MOCK_MODEL": "1", "MOCK_STEP_MS": "20", "DRAIN_TIMEOUT_S": "0"}
# A short generation: enough to see which replica answered it.
TEXT = {"text": "Hello edge", "max_tokens": 5}


def generations(server) -> float:
    """Requests the replica answered on its generation route, any status."""
    return sum(value for (name, labels), value in scrape(server).items()
               if name == "inference_requests_total"
               and dict(labels).get("route", "").startswith("/inference/"))


def generate(base_url: str, body: dict = TEXT, timeout: float = 30, **kw) -> requests.Response:
    return requests.post(f"{base_url}/inference/{MODEL}", json=body, timeout=timeout, **kw)


# --- the template and its renderer (no nginx needed) ------------------------------------------


def test_the_template_holds_exactly_the_documented_placeholders():
    text = TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([A-Za-z_]\w*)\}", text)) == set(PLACEHOLDERS)
    # envsubst would also replace the bare form; the renderer only the braced one.
    for name in PLACEHOLDERS:
        assert not re.search(rf"\${name}\b", text), name
        assert name in text.split("daemon off;")[0], f"{name} is not described in the header"


def test_the_renderer_refuses_a_missing_value():
    with pytest.raises(KeyError, match="API_UPSTREAM_SERVERS"):
        render({"PUBLIC_PORT": "8080", "PROXY_UPSTREAM": "proxy:1223", "INTERNAL_PORT": "8081"})


@pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (gettext-base) is absent")
def test_the_renderer_gives_what_envsubst_gives():
    values = {"PUBLIC_PORT": "8080", "PROXY_UPSTREAM": "proxy:1223", "INTERNAL_PORT": "8081",
              "API_UPSTREAM_SERVERS": server_lines(["api-1:7000", "api-2:7000"])}
    shell_format = " ".join("${%s}" % name for name in PLACEHOLDERS)
    rendered = subprocess.run(["envsubst", shell_format], input=TEMPLATE.read_text(),
                              capture_output=True, text=True, check=True,
                              env={**os.environ, **values}).stdout
    assert rendered == render(values)
    assert "$remote_addr" in rendered and "$upstream_status" in rendered


@needs_nginx
def test_the_rendered_configuration_passes_nginx_check():
    edge = Edge(server_lines(["127.0.0.1:7000", "127.0.0.1:7001"]))
    try:
        edge.conf.write_text(edge.render())
        check = subprocess.run(edge.argv("-t"), capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    finally:
        edge.stop()


# --- the whole chain: client -> edge -> proxy -> edge -> two replicas -------------------------


@pytest.fixture(scope="module")
def replicas():
    with mock_replicas(2, {**MOCK, "MOCK_STEP_MS": "50"}) as servers:
        yield servers


@pytest.fixture(scope="module")
def stack(replicas):
    edge = Edge(server_lines([f"127.0.0.1:{server.port}" for server in replicas]))
    proxy = start_proxy(edge.internal_url)
    edge.proxy_upstream = f"127.0.0.1:{proxy.port}"
    with edge:
        with proxy:
            yield edge, proxy


@needs_nginx
def test_requests_are_spread_over_both_replicas(stack, replicas):
    edge, _ = stack
    before = [generations(server) for server in replicas]
    headers = bearer(make_token())
    for _ in range(10):
        answer = generate(edge.url, headers=headers)
        assert answer.status_code == 200, answer.text
    grown = [generations(server) - was for server, was in zip(replicas, before)]
    assert sum(grown) == 10 and min(grown) >= 3, grown


@needs_nginx
def test_the_request_id_travels_the_whole_chain(stack):
    edge, _ = stack
    request_id = f"edge-{uuid.uuid4().hex}"
    answer = generate(edge.url, headers={**bearer(make_token()), "X-Request-ID": request_id})
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == request_id
    # Both server blocks log it: the client's hop and the proxy's.
    assert wait_for(lambda: edge.output().count(f"request_id={request_id}") == 2, timeout=5)


@needs_nginx
def test_a_stream_passes_through_as_it_is_made(stack):
    edge, _ = stack
    arrivals = []
    started = time.monotonic()
    with generate(edge.url, {"text": "Hello", "max_tokens": 30, "ignore_eos": True},
                  headers=bearer(make_token()), stream=True) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_content(chunk_size=None):
            if chunk:
                arrivals.append(time.monotonic() - started)
    # 30 steps of 50 ms: a buffering hop would deliver it all at the end, in one piece or two.
    assert len(arrivals) >= 10, arrivals
    assert arrivals[-1] - arrivals[0] > 0.7, arrivals


@needs_nginx
def test_an_oversized_body_is_refused_at_the_edge_in_json(stack, replicas):
    edge, _ = stack
    before = [generations(server) for server in replicas]
    answer = generate(edge.url, {"text": "x" * (3 << 20)}, headers=bearer(make_token()))
    assert answer.status_code == 413
    assert answer.json()["status_code"] == 413
    assert [generations(server) for server in replicas] == before


@needs_nginx
def test_a_body_over_the_api_limit_gets_the_api_own_413(stack):
    edge, _ = stack
    answer = generate(edge.url, {"text": "x" * (3 << 19)}, headers=bearer(make_token()))
    assert answer.status_code == 413
    assert "1048576" in answer.json()["message"]


@needs_nginx
def test_a_slow_body_reaches_no_upstream_until_it_is_whole():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    with StubReplica("503") as unused, _RecordingUpstream(reply) as proxy_stand_in:
        with Edge(server_lines([unused.address]), proxy_upstream=proxy_stand_in.address) as edge:
            body = b'{"text": "' + b"y" * 2000 + b'"}'
            with connect(edge.public_port, timeout=10) as client:
                client.sendall(b"POST /inference/%s HTTP/1.1\r\nHost: edge\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                               % (MODEL.encode(), len(body)))
                head, tail = body[:-100], body[-100:]
                for start in range(0, len(head), 300):
                    client.sendall(head[start:start + 300])
                    time.sleep(0.2)
                assert proxy_stand_in.connections == 0, "the edge opened a connection early"
                client.sendall(tail)
                assert wait_for(lambda: proxy_stand_in.connections == 1, timeout=10)
                assert client.recv(4096).startswith(b"HTTP/1.1 200")


class _RecordingUpstream(SocketServer):
    """Counts connections made to it; answers each with `reply` once its headers arrived."""

    def __init__(self, reply: bytes):
        self.reply = reply
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if read_until(conn, head_received) is not None:
                    conn.sendall(self.reply)
            except OSError:
                pass


# --- failing replicas behind the internal server ----------------------------------------------


class Load:
    """Threads sending streamed generations without pause; each result is (start, ok, error)."""

    def __init__(self, url: str, threads: int = 6):
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with generate(self.url, {"text": "Hello", "max_tokens": 10, "ignore_eos": True},
                              stream=True, timeout=20) as answer:
                    text = b"".join(answer.iter_content(chunk_size=None))
                ok, error = answer.status_code == 200 and len(text) > 0, str(answer.status_code)
            except requests.RequestException as exc:
                ok, error = False, type(exc).__name__
            self.results.append((started, ok, error))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def two_fresh_replicas():
    with mock_replicas(2, MOCK) as servers:
        yield servers


# Generous for a loaded 2-core machine: measured, no request started after the kill failed
# (only those in flight on the killed replica, cut midway).
FAILOVER_BOUND_S = 1.0


@needs_nginx
def test_a_killed_replica_costs_only_its_requests_in_flight(two_fresh_replicas):
    doomed, survivor = two_fresh_replicas
    with Edge(server_lines([f"127.0.0.1:{s.port}" for s in two_fresh_replicas])) as edge:
        with Load(edge.internal_url) as load:
            assert wait_for(lambda: sum(ok for _, ok, _ in load.results) >= 20, timeout=30)
            killed_at = time.monotonic()
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # master, worker and backend at once
            survived_before = generations(survivor)
            time.sleep(4)
        failures = [(start - killed_at, error) for start, ok, error in load.results if not ok]
        after_kill = [start for start, _, _ in load.results if start > killed_at + FAILOVER_BOUND_S]
        # The failover window: from the kill to the start of the last request that failed.
        window = max((offset for offset, _ in failures), default=None)
        print(f"failover window: {window}; failures (start after kill, error): {failures}")
        assert len(after_kill) >= 20, "too little load after the kill to judge"
        assert window is None or window <= FAILOVER_BOUND_S, failures
        assert generations(survivor) - survived_before >= 20


@needs_nginx
def test_a_replica_answering_503_is_skipped_for_new_requests(replicas):
    with StubReplica("503") as loading:
        lines = server_lines([loading.address, f"127.0.0.1:{replicas[0].port}"])
        with Edge(lines) as edge:
            for _ in range(12):
                answer = generate(edge.internal_url)
                assert answer.status_code == 200, answer.text
            # One 503 marks it failed for fail_timeout (3 s): it is not asked at every request.
            assert 1 <= loading.requests <= 3, loading.requests
            assert "upstream_status=503, 200" in edge.output()


@needs_nginx
def test_no_ready_replica_gives_503_with_retry_after():
    with StubReplica("503") as loading:
        lines = server_lines([loading.address, f"127.0.0.1:{free_port()}"])
        with Edge(lines) as edge:
            for _ in range(3):
                answer = generate(edge.internal_url)
                assert answer.status_code == 503
                assert answer.headers["Retry-After"] == "5"
                assert answer.json()["status_code"] == 503


@needs_nginx
def test_the_proxy_down_gives_503_in_json_at_the_public_port():
    with StubReplica("503") as unused:
        with Edge(server_lines([unused.address])) as edge:  # no proxy behind it
            answer = generate(edge.url, headers=bearer(make_token()))
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "5"
            assert answer.json()["status_code"] == 503


@needs_nginx
def test_a_draining_replica_is_skipped_while_its_streams_finish(replicas):
    draining = api_server({**MOCK, "DRAIN_TIMEOUT_S": "30"})
    with draining:
        lines = server_lines([f"127.0.0.1:{draining.port}", f"127.0.0.1:{replicas[0].port}"])
        with Edge(lines) as edge:
            long_stream = generate(draining.url, {"text": "Hi", "max_tokens": 150,
                                                  "ignore_eos": True}, stream=True)
            assert long_stream.status_code == 200
            draining.signal(signal.SIGTERM)
            assert wait_for(lambda: requests.get(draining.url + "/health", timeout=2)
                            .status_code == 503, timeout=10)
            for _ in range(10):
                answer = generate(edge.internal_url)
                assert answer.status_code == 200, answer.text
            # The stream the replica had taken before its SIGTERM runs to its end.
            assert len(long_stream.content) > 0
            assert draining.exited(30)


@needs_nginx
def test_a_stream_cut_after_its_first_byte_is_not_run_again(replicas):
    backup = replicas[0]
    with StubReplica("cut") as cutting:
        # The only other server is a backup: a retry, were there one, could only go there.
        lines = f"server {cutting.address} max_fails=1 fail_timeout=3s;\n" \
                f"server 127.0.0.1:{backup.port} backup;"
        with Edge(lines) as edge:
            before = generations(backup)
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                with generate(edge.internal_url, stream=True) as answer:
                    assert answer.status_code == 200
                    b"".join(answer.iter_content(chunk_size=None))
            assert cutting.requests == 1
            time.sleep(1)
            assert generations(backup) == before


@needs_nginx
def test_a_replica_that_fails_before_answering_is_retried_elsewhere(replicas):
    # The control of the test above: nothing sent yet, so the backup gets the request.
    backup = replicas[0]
    with StubReplica("close") as closing:
        lines = f"server {closing.address} max_fails=1 fail_timeout=3s;\n" \
                f"server 127.0.0.1:{backup.port} backup;"
        with Edge(lines) as edge:
            before = generations(backup)
            answer = generate(edge.internal_url)
            assert answer.status_code == 200, answer.text
            assert closing.requests == 1
            assert generations(backup) == before + 1
