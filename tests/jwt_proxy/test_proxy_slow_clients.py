"""A thousand slow or idle connections against the proxy: normal requests still get their answer,
and the slow ones are dropped at the header deadline."""
from __future__ import annotations

import resource
import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import bearer, make_token, sample, scrape, start_proxy
from net import connect
from stub_upstream import stream_chunk

pytestmark = pytest.mark.processes

SLOW_CLIENTS = 1000


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    """This process holds a thousand sockets at once: raise its soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CLIENTS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_slow_clients(port: int, count: int) -> list[socket.socket]:
    """count connections: half send nothing, half the start of a request that never ends."""
    sockets = []
    try:
        for index in range(count):
            sock = connect(port, timeout=10)
            if index % 2:
                sock.sendall(b"POST /inference/m HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
            sockets.append(sock)
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def still_open(sockets: list[socket.socket], wait: float) -> list[socket.socket]:
    """The sockets the proxy has not closed after `wait` seconds of watching."""
    remaining = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + wait
        while remaining and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # EOF or reset: the proxy let go of it
                    selector.unregister(sock)
                    remaining.discard(sock)
    return list(remaining)


def normal_stream(proxy_url: str, index: int) -> bool:
    """An authenticated streamed request gets its complete answer."""
    token_id = f"normal-{index}"
    response = requests.post(proxy_url + f"/stream?n=5&delay=0.05&tag=n{index}", data=b"p",
                             headers=bearer(make_token(token_id=token_id)), timeout=60)
    expected = b"".join(stream_chunk(f"n{index}", token_id, j) for j in range(5))
    return response.status_code == 200 and response.content == expected


def test_normal_requests_are_served_beside_a_thousand_slow_connections(upstream):
    with start_proxy(upstream.url, PROXY_HEADER_TIMEOUT="120",
                     PROXY_KEEPALIVE_TIMEOUT="120") as proxy:
        slow = open_slow_clients(proxy.port, SLOW_CLIENTS)
        try:
            with ThreadPoolExecutor(8) as pool:
                assert all(pool.map(lambda i: normal_stream(proxy.url, i), range(16)))
            assert requests.get(proxy.url + "/health", timeout=30).status_code == 200
            # None of the slow connections was refused or dropped: they were all held.
            assert len(still_open(slow, wait=0.5)) == SLOW_CLIENTS
        finally:
            close_all(slow)


def test_a_thousand_slow_connections_are_dropped_at_the_header_deadline(upstream):
    with start_proxy(upstream.url, PROXY_HEADER_TIMEOUT="2",
                     PROXY_KEEPALIVE_TIMEOUT="120") as proxy:
        before = scrape(proxy)
        slow = open_slow_clients(proxy.port, SLOW_CLIENTS)
        try:
            assert normal_stream(proxy.url, 0)
            left = still_open(slow, wait=60)
            assert not left, f"{len(left)} slow connections were still open after 60 s"
        finally:
            close_all(slow)
        after = scrape(proxy)
        assert sample(after, "proxy_client_timeouts_total", phase="headers") \
            - sample(before, "proxy_client_timeouts_total", phase="headers") >= SLOW_CLIENTS
        assert normal_stream(proxy.url, 1)
