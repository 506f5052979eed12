"""Token lifetimes and absurd numeric claims: a clear 401, never a 500."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
import requests

from helpers import SECRET, bearer, make_token, sample, scrape, start_proxy

pytestmark = pytest.mark.processes  # servers of its own: a stub upstream and proxies

MAX_LIFETIME_S = 3600


@pytest.fixture(scope="module")
def proxy(upstream):
    """No lifetime cap (the default)."""
    with start_proxy(upstream.url) as server:
        yield server


@pytest.fixture(scope="module")
def capped_proxy(upstream):
    with start_proxy(upstream.url, PROXY_MAX_TOKEN_LIFETIME=str(MAX_LIFETIME_S)) as server:
        yield server


def raw_token(payload_json: str, secret: str = SECRET) -> str:
    """An HS256 token whose payload is this exact JSON text (Infinity, 1e999 and all)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(payload_json.encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


def claims_json(**numbers: str) -> str:
    extra = "".join(f', "{name}": {value}' for name, value in numbers.items())
    return '{"team_id": "t", "token_id": "k"' + extra + "}"


@pytest.mark.parametrize("exp", ["1e300", "1e999", "Infinity", str(10 ** 400), "253402300800"])
def test_absurd_exp_is_refused_with_a_reason(proxy, exp):
    before = scrape(proxy)
    response = requests.get(proxy.url + "/echo", headers=bearer(raw_token(claims_json(exp=exp))),
                            timeout=10)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["status_code"] == 401 and "exp" in body["message"]
    after = scrape(proxy)
    assert sum(sample(after, "proxy_auth_failures_total", reason=r)
               - sample(before, "proxy_auth_failures_total", reason=r)
               for r in ("lifetime", "invalid")) == 1


@pytest.mark.parametrize("claims", [
    {"iat": "1e300"}, {"iat": "-1e300"}, {"nbf": "1e999"}, {"nbf": "-Infinity"}, {"nbf": "NaN"},
    {"iat": str(10 ** 400)}, {"exp": "-1e300"}, {"exp": "true"}, {"exp": '"soon"'},
    {"exp": "[1]"}, {"extra": "1" + "0" * 5000}, {"exp": "1" + "0" * 5000},
], ids=lambda claims: ",".join(f"{k}={v[:12]}" for k, v in claims.items()))
def test_absurd_numeric_claims_never_give_500(proxy, claims):
    response = requests.get(proxy.url + "/echo", headers=bearer(raw_token(claims_json(**claims))),
                            timeout=10)
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        assert response.json()["status_code"] == 401


def test_far_but_sane_exp_is_accepted_without_a_cap(proxy):
    token = make_token(exp=int(time.time()) + 10 * 365 * 86400)
    assert requests.get(proxy.url + "/echo", headers=bearer(token), timeout=10).status_code == 200


def test_cap_refuses_tokens_that_live_too_long(capped_proxy):
    token = make_token(exp=int(time.time()) + 2 * MAX_LIFETIME_S)
    response = requests.get(capped_proxy.url + "/echo", headers=bearer(token), timeout=10)
    assert response.status_code == 401
    assert f"{MAX_LIFETIME_S} s" in response.json()["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_cap_refuses_tokens_without_exp(capped_proxy):
    response = requests.get(capped_proxy.url + "/echo", headers=bearer(make_token()), timeout=10)
    assert response.status_code == 401
    assert "exp" in response.json()["message"]


def test_cap_accepts_tokens_within_it(capped_proxy):
    token = make_token(exp=int(time.time()) + MAX_LIFETIME_S - 60)
    assert requests.get(capped_proxy.url + "/echo", headers=bearer(token),
                        timeout=10).status_code == 200
