"""The proxy on Anthropic's Messages API: the token in x-api-key, which goes no further, and
its own errors in Anthropic's shape. A stub upstream echoes what reaches it."""
from __future__ import annotations

import pytest
import requests

from helpers import bearer, make_token, seen_headers, start_proxy

pytestmark = pytest.mark.processes  # servers of its own: a stub upstream and a proxy


@pytest.fixture(scope="module")
def proxy(upstream):
    with start_proxy(upstream.url, PROXY_MAX_STREAMS_PER_TOKEN="") as server:
        yield server


def test_the_token_in_x_api_key_is_taken_on_messages_and_not_forwarded(proxy):
    token = make_token(team_id="team-m", token_id="tok-m")
    response = requests.post(proxy.url + "/v1/messages", data=b"{}", timeout=10,
                             headers={"x-api-key": token, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    headers = seen_headers(response.json())
    assert headers["x-team-id"] == "team-m" and headers["x-token-id"] == "tok-m"
    assert "x-api-key" not in headers and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert token not in response.text


def test_authorization_wins_over_x_api_key(proxy):
    response = requests.post(proxy.url + "/v1/messages", data=b"{}", timeout=10,
                             headers={**bearer(make_token(token_id="by-bearer")),
                                      "x-api-key": "not-a-jwt"})
    assert response.status_code == 200
    assert seen_headers(response.json())["x-token-id"] == "by-bearer"


@pytest.mark.parametrize("key,words", [("not-a-jwt", "well-formed"), ("two tokens", "one token"),
                                       ("", "one token")])
def test_a_bad_x_api_key_is_a_401_in_anthropics_shape(proxy, key, words):
    response = requests.post(proxy.url + "/v1/messages", data=b"{}", timeout=10,
                             headers={"x-api-key": key})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert words in body["error"]["message"]


def test_x_api_key_is_not_taken_elsewhere(proxy):
    native = requests.post(proxy.url + "/echo", data=b"{}", timeout=10,
                           headers={"x-api-key": make_token()})
    assert native.status_code == 401 and "Authorization" in native.json()["message"]
    chat = requests.post(proxy.url + "/v1/chat/completions", data=b"{}", timeout=10,
                         headers={"x-api-key": make_token()})
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"
