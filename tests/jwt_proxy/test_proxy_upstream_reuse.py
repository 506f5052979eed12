"""Which upstream connections the proxy reuses: never one whose API may have left bytes of the
request unread, so that one client's refused body cannot become part of the next request."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import bearer, make_token, start_proxy
from stub_upstream import HeadFirstUpstream

pytestmark = pytest.mark.processes

API_LIMIT = 16 * 1024  # the stub API's body limit; the proxy's own is its default, 8 MiB
LARGE = b"x" * (4 * API_LIMIT)  # passes the proxy, refused by the API from its head
SMALL = b'{"text": "hello"}'


@pytest.fixture
def api():
    with HeadFirstUpstream(API_LIMIT) as server:
        yield server


@pytest.fixture
def proxy(api):
    with start_proxy(api.url) as server:
        yield server


class Client:
    """One client of the proxy: its own token and kept-alive connection, its answers noted."""

    def __init__(self, proxy, name: str):
        self.url = proxy.url + "/generate"
        self.name = name
        self.session = requests.Session()
        self.session.headers.update(bearer(make_token()))
        self.wrong: list[str] = []  # small requests that did not get their own answer
        self.sent = 0

    def small(self) -> None:
        """A small request, which must get the API's answer to it and nothing else."""
        request_id = f"{self.name}-{uuid.uuid4().hex[:8]}"
        self.sent += 1
        try:
            response = self.session.post(self.url, data=SMALL, timeout=30,
                                         headers={"X-Request-ID": request_id})
        except requests.RequestException as exc:
            self.wrong.append(f"{request_id}: {type(exc).__name__}")
            return
        got = response.json() if response.status_code == 200 else {}
        if (got.get("request_id"), got.get("body_bytes")) != (request_id, len(SMALL)):
            self.wrong.append(f"{request_id}: {response.status_code} {response.text[:80]}")

    def large(self) -> None:
        """A body the API refuses from its head; its 413 is relayed."""
        response = self.session.post(self.url, data=LARGE, timeout=30)
        assert response.status_code == 413, response.text[:200]


def test_a_body_the_api_left_unread_never_reaches_the_next_requests(api, proxy):
    attacker, bystander = Client(proxy, "attacker"), Client(proxy, "bystander")
    for round_ in range(6):
        attacker.large()
        # Either client may be the next to reach the API after the refused body.
        for client in (attacker, bystander) if round_ % 2 else (bystander, attacker):
            for _ in range(4):
                client.small()
    assert attacker.wrong + bystander.wrong == []
    assert api.refused == 6 and api.garbled == 0


def test_an_error_whose_body_comes_later_is_not_reused_either(api, proxy):
    # The proxy has the 413's status and headers while its body is still on the way.
    attacker, bystander = Client(proxy, "attacker"), Client(proxy, "bystander")
    with attacker.session.post(attacker.url, data=LARGE, headers={"X-Stub-Split": "1"},
                               stream=True, timeout=30) as response:
        assert response.status_code == 413
        api.release_split()
        assert b"body over" in response.content
    for _ in range(4):
        attacker.small()
        bystander.small()
    assert attacker.wrong + bystander.wrong == []
    assert api.garbled == 0


def test_an_attacker_beside_a_normal_client_fails_none_of_its_requests(api, proxy):
    attacker, bystander = Client(proxy, "attacker"), Client(proxy, "bystander")

    def attack() -> None:
        for _ in range(15):
            attacker.large()
            attacker.small()

    def normal_use() -> None:
        for _ in range(60):
            bystander.small()

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(attack), pool.submit(normal_use)]:
            future.result()
    assert attacker.wrong + bystander.wrong == []
    assert (attacker.sent, bystander.sent) == (15, 60)
    assert api.garbled == 0
