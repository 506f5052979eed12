"""Per-token model access: the `models` claim, through the real proxy in front of the real API
server on the mock. A refused request gets 403 in its route's shape before the API sees it."""
from __future__ import annotations

import http.client
import json

import anthropic
import openai
import pytest
import requests

from helpers import MODEL, bearer, make_token, sample, scrape, start_proxy
from inference_api.mock.text import mock_answer

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def proxy(mock_server):
    with start_proxy(mock_server.url) as server:
        yield server


def api_requests(mock_server) -> float:
    """Every request the API answered but its /metrics scrapes (its own count, read directly)."""
    return sum(value for (name, labels), value in scrape(mock_server).items()
               if name == "inference_requests_total" and ("route", "/metrics") not in labels)


def raw(proxy, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, str]:
    """Status and text of a request whose path is sent as written (requests would decode
    percent-encoded letters such as %53 before sending)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={
            **bearer(token), "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def post(proxy, route: str, body, token: str, **kw) -> requests.Response:
    return requests.post(proxy.url + route, json=body, headers=bearer(token), timeout=30, **kw)


@pytest.mark.parametrize("patterns", [[MODEL], ["Smol*"], ["other", "*-135M-*"]])
def test_an_allowed_model_is_served_on_every_route(proxy, patterns):
    token = make_token(models=patterns)
    native = post(proxy, f"/inference/{MODEL}", {"text": "hello", "max_tokens": 5}, token)
    assert native.status_code == 200 and native.text == mock_answer("hello", 5)
    assert post(proxy, "/v1/chat/completions", CHAT, token).status_code == 200
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    streamed = client.chat.completions.create(**{**CHAT, "stream": True})
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    messages = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    answer = messages.messages.create(model=MODEL, max_tokens=4,
                                      messages=[{"role": "user", "content": "hi"}])
    assert answer.content[0].text


def test_a_token_without_the_claim_may_use_any_model(proxy):
    # Today's behaviour: the API alone answers, with its 404 for a model it does not serve.
    token = make_token()
    assert post(proxy, f"/inference/{MODEL}", {"text": "a", "max_tokens": 2}, token).ok
    assert post(proxy, "/inference/other-model", {"text": "a"}, token).status_code == 404


def test_another_model_is_refused_in_each_routes_shape_before_the_api(proxy, mock_server):
    token = make_token(models=["other-*"])
    before = api_requests(mock_server)
    native = post(proxy, f"/inference/{MODEL}", {"text": "hello"}, token)
    assert native.status_code == 403
    assert native.json() == {"status_code": 403,
                             "message": f'this token may not use the model "{MODEL}"'}
    assert post(proxy, f"/predictions/{MODEL}", {"text": "hello"}, token).status_code == 403

    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(**{**CHAT, "stream": True})
    assert caught.value.body["code"] == "model_not_allowed" and MODEL in caught.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=3)

    messages = anthropic.Anthropic(base_url=proxy.url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        messages.messages.create(model=MODEL, max_tokens=4,
                                 messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "permission_error"
    assert api_requests(mock_server) == before  # none of them reached the API


@pytest.mark.parametrize("route, body", [
    ("/generate", {"text": "hello"}),                          # names no model: the default
    ("/tokenize", {"prompt": "hello"}),
    ("/v1/chat/completions", {**CHAT, "model": 5}),            # not a name
    ("/v1/chat/completions", b'{"model": "other-x", "model": "' + MODEL.encode() + b'"}'),
    ("/v1/chat/completions", b"{not json"),
])
def test_a_restricted_token_must_name_an_allowed_model_unambiguously(proxy, route, body):
    token = make_token(models=["other-*"])
    kw = {"data": body, "headers": {**bearer(token), "Content-Type": "application/json"}} \
        if isinstance(body, bytes) else {"json": body, "headers": bearer(token)}
    response = requests.post(proxy.url + route, timeout=30, **kw)
    assert response.status_code == 403, response.text


def test_percent_encoded_model_in_the_path_is_checked_as_the_api_decodes_it(proxy):
    encoded = "%53" + MODEL[1:]  # %53 is 'S'
    allowed, refused = make_token(models=[MODEL]), make_token(models=["other"])
    body = {"text": "a", "max_tokens": 2}
    assert raw(proxy, "POST", f"/inference/{encoded}", allowed, body)[0] == 200
    assert raw(proxy, "POST", f"/inference/{encoded}", refused, body)[0] == 403
    # Encoded, a pattern must still match the decoded name, as the API will use it.
    assert raw(proxy, "POST", f"/inference/{encoded}", make_token(models=["%53*"]), body)[0] == 403


def test_reads_pass_and_the_model_list_is_whole(proxy):
    token = make_token(models=["other"])
    listed = requests.get(proxy.url + "/v1/models", headers=bearer(token), timeout=10)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == [MODEL]


def test_an_empty_list_allows_no_model(proxy):
    token = make_token(models=[])
    assert post(proxy, f"/inference/{MODEL}", {"text": "a"}, token).status_code == 403


@pytest.mark.parametrize("claims", [
    {"models": "Smol*"}, {"models": [1]}, {"models": [""]}, {"models": ["a b"]},
    {"models": {"name": MODEL}}, {"models": ["x"] * 101},
    {"rpm": -1}, {"rpm": "60"}, {"rpm": True}, {"rpm": 1.5}, {"tpm": 1e300}, {"tpm": [5]},
    {"rpm": 10**10},
])
def test_a_malformed_policy_claim_makes_the_token_invalid(proxy, claims):
    before = scrape(proxy)
    response = post(proxy, f"/inference/{MODEL}", {"text": "a"}, make_token(**claims))
    assert response.status_code == 401
    name = next(iter(claims))
    assert f"token claim {name} must" in response.json()["message"]
    assert (sample(scrape(proxy), "proxy_auth_failures_total", reason="bad_claim")
            == sample(before, "proxy_auth_failures_total", reason="bad_claim") + 1)


@pytest.mark.parametrize("path", ["/metrics", "/%6detrics", "/%6D%65trics"])
def test_no_spelling_of_metrics_reaches_the_apis_through_the_public_port(proxy, path):
    status, text = raw(proxy, "GET", path, make_token())
    assert status == 404, text[:200]
    assert "inference_requests_total" not in text
