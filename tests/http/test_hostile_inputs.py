"""Hostile and broken requests on every route: always a short 4xx in the route's error shape.

Through a real gunicorn server on the mock backend. The table test at the top is the standing
guard: every bad input on every route that takes a body; the tests below it look at one kind
of input each (chunked bodies, request ids, prompt length, the tokenizer and the GIL).
"""
from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse

import pytest
import requests

from helpers import MODEL, api_server
from net import connect, raw_request

MAX_BODY = 1 << 20
MAX_MESSAGE_CHARS = 600  # an error message quotes at most a short prefix of any value


def _chat_content(body: dict, value) -> dict:
    body["messages"][0]["content"] = value
    return body


# Each route: its path, a valid body, where its prompt text goes, its stop list, a boolean, its
# token limit and its error shape; the OpenAI routes ignore unknown fields, as vLLM does.
ROUTES = {
    "inference": dict(path=f"/inference/{MODEL}", base={"text": "hello", "max_tokens": 2},
                      text="text", stop="stop_sequence", flag="ignore_eos", shape="native",
                      max="max_tokens"),
    "predictions": dict(path=f"/predictions/{MODEL}", base={"text": "hello", "max_tokens": 2},
                        text="text", stop="stop_sequence", flag="return_prompt", shape="native",
                        max="max_tokens"),
    "completions": dict(path="/v1/completions",
                        base={"model": MODEL, "prompt": "hello", "max_tokens": 2},
                        text="prompt", stop="stop", flag="stream", shape="openai",
                        max="max_tokens", ignores_unknown=True),
    "chat": dict(path="/v1/chat/completions",
                 base={"model": MODEL, "max_tokens": 2,
                       "messages": [{"role": "user", "content": "hello"}]},
                 text=None, stop="stop", flag="stream", shape="openai", max="max_tokens",
                 ignores_unknown=True),
    "generate": dict(path="/generate", base={"text": "hello", "max_tokens": 2}, text="text",
                     stop="stop", flag="stream", shape="native", max="max_tokens"),
    # The Responses API has no stop strings: "stop" is an unknown field there, and refused.
    "responses": dict(path="/v1/responses",
                      base={"model": MODEL, "input": "hello", "max_output_tokens": 2},
                      text="input", stop="stop", flag="stream", shape="openai",
                      max="max_output_tokens"),
    "messages": dict(path="/v1/messages",
                     base={"model": MODEL, "max_tokens": 2,
                           "messages": [{"role": "user", "content": "hello"}]},
                     text=None, stop="stop_sequences", flag="stream", shape="anthropic",
                     max="max_tokens"),
    # The task routes take no stop strings and no top_p: both are unknown fields, refused.
    "solve_math": dict(path="/solve/math", base={"problem": "hello", "max_new_tokens": 2},
                       text="problem", stop="stop", flag="stream", shape="native",
                       max="max_new_tokens", lacks=("stop", "top_p")),
    "solve_coding": dict(path="/solve/coding", base={"problem": "hello", "max_new_tokens": 2},
                         text="problem", stop="stop", flag="stream", shape="native",
                         max="max_new_tokens", lacks=("stop", "top_p")),
}


def with_text(route: dict, value) -> dict:
    """The route's valid body with its prompt text replaced."""
    body = json.loads(json.dumps(route["base"]))
    if route["text"] is None:
        return _chat_content(body, value)
    body[route["text"]] = value
    return body


def with_field(route: dict, key: str, value) -> dict:
    """The route's valid body with one more field."""
    return {**json.loads(json.dumps(route["base"])), key: value}


DEEP = 100_000
# (name, body maker: route -> dict or bytes, extra headers, expected status, words in message)
BAD_INPUTS = [
    ("deeply nested array body", lambda r: b"[" * DEEP + b"]" * DEEP, {}, 400, "nested"),
    ("deeply nested object body", lambda r: b'{"a":' * DEEP + b"1" + b"}" * DEEP, {}, 400,
     "nested"),
    ("deeply nested unbalanced body", lambda r: b"[" * DEEP, {}, 400, "nested"),
    ("deeply nested prompt", lambda r: json.dumps(with_text(r, "X")).replace(
        '"X"', "[" * DEEP + "]" * DEEP).encode(), {}, 400, "nested"),
    ("malformed JSON", lambda r: b"{not json", {}, 400, "malformed JSON"),
    ("empty body", lambda r: b"", {}, 400, "empty"),
    ("blank body", lambda r: b"  \n ", {}, 400, "empty"),
    ("array body", lambda r: b"[1, 2]", {}, 400, "must be an object"),
    ("string body", lambda r: b'"text"', {}, 400, "must be an object"),
    ("null body", lambda r: b"null", {}, 400, "must be an object"),
    ("invalid UTF-8", lambda r: b'{"text": "\xff\xfe"}', {}, 400, "malformed JSON"),
    ("lone surrogate in the prompt", lambda r: with_text(r, "a\udc00b"), {}, 400, "surrogate"),
    ("lone surrogate in a stop", lambda r: with_field(r, r["stop"], ["\ud800"]), {}, 400,
     "surrogate"),
    ("lone surrogate in a key", lambda r: with_field(r, "k\udfff", 1), {}, 400, "surrogate"),
    ("NaN temperature", lambda r: json.dumps(with_field(r, "temperature", float("nan"))).encode(),
     {}, 400, "finite number"),
    ("Infinity temperature", lambda r: json.dumps(
        with_field(r, "temperature", float("inf"))).encode(), {}, 400, "finite number"),
    ("-Infinity top_p", lambda r: json.dumps(with_field(r, "top_p", float("-inf"))).encode(), {},
     400, "finite number"),
    ("temperature 1e999", lambda r: json.dumps(with_field(r, "temperature", 1)).replace(
        '"temperature": 1', '"temperature": 1e999').encode(), {}, 400, "finite number"),
    ("temperature as the string NaN", lambda r: with_field(r, "temperature", "NaN"), {}, 400,
     "finite number"),
    ("boolean as yes", lambda r: with_field(r, r["flag"], "yes"), {}, 400, "valid boolean"),
    ("boolean as 1", lambda r: with_field(r, r["flag"], 1), {}, 400, "valid boolean"),
    ("boolean as the string true", lambda r: with_field(r, r["flag"], "true"), {}, 400,
     "valid boolean"),
    ("max_tokens as true", lambda r: with_field(r, r["max"], True), {}, 400,
     "not true or false"),
    ("temperature as false", lambda r: with_field(r, "temperature", False), {}, 400,
     "not true or false"),
    ("max_tokens of 4000 digits", lambda r: json.dumps(with_field(r, r["max"], 7)).replace(
        f'"{r["max"]}": 7', f'"{r["max"]}": ' + "9" * 4000).encode(), {}, 400, "max_tokens"),
    ("a number of 5000 digits", lambda r: json.dumps(with_field(r, r["max"], 7)).replace(
        f'"{r["max"]}": 7', f'"{r["max"]}": ' + "9" * 5000).encode(), {}, 400, "malformed JSON"),
    ("max_tokens as a string of 5000 digits", lambda r: with_field(r, r["max"], "9" * 5000),
     {}, 400, "max_tokens"),
    ("max_tokens fractional", lambda r: with_field(r, r["max"], 2.5), {}, 400, "max_tokens"),
    ("temperature as a long string", lambda r: with_field(r, "temperature", "x" * 500_000), {},
     400, "characters"),
    ("a 500-kilobyte unknown key", lambda r: with_field(r, "k" * 500_000, 1), {}, 400,
     "characters"),
    ("twenty thousand unknown keys", lambda r: {**r["base"], **{f"k{i}": 1 for i in range(20_000)}},
     {}, 400, "more problems"),
    ("a 900-kilobyte stop list", lambda r: with_field(r, r["stop"], ["stop me"] * 80_000), {},
     400, "items"),
    ("a stop of the wrong type", lambda r: with_field(r, r["stop"], {"a": 1}), {}, 400,
     "stop"),
    ("an unknown field like beam_width", lambda r: with_field(r, "beam_width", {"50256": -100}),
     {}, 400, "beam_width"),
    ("prompt of the wrong type", lambda r: with_text(r, {"nested": ["x"]}), {}, 400, ""),
    ("prompt null", lambda r: with_text(r, None), {}, 400, ""),
    ("prompt of 1,040,000 characters", lambda r: with_text(r, "a" * 1_040_000), {}, 400,
     "characters"),
    ("gzip body", lambda r: with_field(r, r["max"], 2), {"Content-Encoding": "gzip"}, 415,
     "identity"),
    ("brotli body", lambda r: with_field(r, r["max"], 2), {"Content-Encoding": "br"}, 415,
     "identity"),
    ("form body", lambda r: b"text=hello&max_tokens=2",
     {"Content-Type": "application/x-www-form-urlencoded"}, 400, "malformed JSON"),
    ("body over MAX_BODY_BYTES", lambda r: with_text(r, "x " * (MAX_BODY // 2 + 10)), {}, 413,
     "bytes"),
]


def check_error(route: dict, response: requests.Response, status: int, words: str) -> str:
    """The answer is the route's error shape with this status; returns its message."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"] == "application/json"
    payload = response.json()
    if route["shape"] == "native":
        assert set(payload) == {"status_code", "message"} and payload["status_code"] == status
        message = payload["message"]
    elif route["shape"] == "anthropic":
        assert set(payload) == {"type", "error"} and payload["type"] == "error"
        assert set(payload["error"]) == {"type", "message"}
        assert payload["error"]["type"] == ("request_too_large" if status == 413 else
                                            "invalid_request_error")
        message = payload["error"]["message"]
    else:
        error = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        message = error["message"]
    assert words in message, message
    assert len(message) <= MAX_MESSAGE_CHARS, message[:1000]
    assert len(response.content) <= MAX_MESSAGE_CHARS + 200
    return message


@pytest.mark.parametrize("route_name", sorted(ROUTES))
@pytest.mark.parametrize("name,make,headers,status,words", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_a_short_4xx_in_the_routes_shape(mock_server, route_name, name, make,
                                                        headers, status, words):
    route = ROUTES[route_name]
    body = make(route)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = requests.post(mock_server.url + route["path"], data=data, timeout=60,
                             headers={"Content-Type": "application/json", **headers})
    if name in UNKNOWN_FIELDS and route.get("ignores_unknown"):
        # The OpenAI routes ignore fields OpenAI does not have and name them in a short header.
        assert response.status_code == 200, response.text[:500]
        assert 0 < len(response.headers["X-Ignored-Fields"]) <= 1000
        return
    if name == "form body" and route["shape"] != "native":
        status, words = 415, "application/json"  # as vLLM: the /v1 routes take JSON only
    if route_name == "responses" and name == "a 900-kilobyte stop list":
        words = "stop is not a known field"
    lacked = {"a 900-kilobyte stop list": "stop", "a stop of the wrong type": "stop",
              "-Infinity top_p": "top_p"}.get(name)
    if lacked in route.get("lacks", ()):
        words = f"{lacked} is not a known field"
    check_error(route, response, status, words.replace("max_tokens", route["max"]))


UNKNOWN_FIELDS = {"a 500-kilobyte unknown key", "twenty thousand unknown keys",
                  "an unknown field like beam_width"}


def test_the_server_still_serves_after_the_hostile_table(mock_server):
    response = requests.post(f"{mock_server.url}/inference/{MODEL}",
                             json={"text": "still alive", "max_tokens": 3}, timeout=30)
    assert response.status_code == 200 and response.text


OPENAI_ONLY = [
    ("more choices than rows", {"prompt": ["a"] * 8, "n": 5}, "generations"),
    ("a token id outside the vocabulary", {"prompt": [[1, 2, 10**30]]}, "vocabulary"),
    ("a model name of 100,000 characters", {"model": "m" * 100_000}, "characters"),
]


@pytest.mark.parametrize("name,fields,words", OPENAI_ONLY, ids=[c[0] for c in OPENAI_ONLY])
def test_openai_specific_bad_inputs(mock_server, name, fields, words):
    route = ROUTES["completions"]
    response = requests.post(mock_server.url + route["path"],
                             json={**route["base"], **fields}, timeout=30)
    assert 400 <= response.status_code < 500
    check_error(route, response, response.status_code, words)


def test_chat_content_part_of_a_huge_type_is_quoted_short(mock_server):
    route = ROUTES["chat"]
    body = _chat_content(json.loads(json.dumps(route["base"])), [{"type": "t" * 200_000}])
    check_error(route, requests.post(mock_server.url + route["path"], json=body, timeout=30),
                400, "200000 characters")


def test_huge_prompt_is_refused_by_its_length_with_the_limit(mock_server):
    for route_name in ("inference", "completions", "chat", "generate"):
        route = ROUTES[route_name]
        response = requests.post(mock_server.url + route["path"],
                                 json=with_text(route, "a" * 1_040_000), timeout=60)
        message = check_error(route, response, 400, "1040000 characters")
        assert "over the" in message and "context of" in message
    # Many chat messages count together.
    route = ROUTES["chat"]
    body = {**route["base"], "messages": [{"role": "user", "content": "b" * 100_000}] * 9}
    response = requests.post(mock_server.url + route["path"], json=body, timeout=60)
    assert "900000 characters" in check_error(route, response, 400, "characters")


def test_generate_with_max_input_tokens_keeps_the_end_of_a_long_prompt(mock_server):
    words = " ".join(f"w{i}" for i in range(100_000))  # over the character bound, 100k tokens
    response = requests.post(mock_server.url + "/generate", timeout=60,
                             json={"text": words, "max_input_tokens": 10, "max_tokens": 2})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["prompt_tokens"] == 10


def chunked_head(path: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()


CHUNKED = [("chunk size zz", b"zz\r\n{}\r\n0\r\n\r\n", 400),
           ("chunk size -1", b"-1\r\n{}\r\n0\r\n\r\n", 400),
           ("body cut inside a chunk", b"ff\r\n{}\r\n0\r\n\r\n", 400)]


@pytest.mark.parametrize("route_name", sorted(ROUTES))
@pytest.mark.parametrize("name,body,status", CHUNKED, ids=[c[0] for c in CHUNKED])
def test_malformed_chunked_body_gets_400_json(mock_server, route_name, name, body, status):
    route = ROUTES[route_name]
    got, headers, payload = raw_request(mock_server.port, chunked_head(route["path"]) + body,
                                        end=name == "body cut inside a chunk")
    assert got == status, payload[:300]
    assert headers["Content-Type"] == "application/json"
    text = json.loads(payload)
    message = text["message"] if route["shape"] == "native" else text["error"]["message"]
    assert "could not be read" in message


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_chunked_body_over_the_limit_gets_413(mock_server, route_name):
    route = ROUTES[route_name]
    data = json.dumps(with_text(route, "x" * (MAX_BODY + 10))).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 65536]), data[i:i + 65536])
                      for i in range(0, len(data), 65536)) + b"0\r\n\r\n"
    status, headers, payload = raw_request(mock_server.port, chunked_head(route["path"]) + chunks)
    assert status == 413, payload[:300]
    text = json.loads(payload)
    message = text["message"] if route["shape"] == "native" else text["error"]["message"]
    assert f"over {MAX_BODY} bytes" in message


def test_chunked_body_within_the_limit_is_served(mock_server):
    data = json.dumps({"text": "chunked hello", "max_tokens": 2}).encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    head = chunked_head(f"/inference/{MODEL}").replace(b"HTTP/1.1\r\n",
                                                       b"HTTP/1.1\r\nConnection: close\r\n")
    status, _, payload = raw_request(mock_server.port, head + body)
    assert status == 200 and payload


@pytest.mark.parametrize("request_id", ["team-a/user+1=x@host:42.7_z", "a" * 128, "abc/+=@"])
def test_request_id_with_the_proxys_characters_comes_back_unchanged(mock_server, request_id):
    for method, path, body in (("post", f"/inference/{MODEL}", {"text": "id", "max_tokens": 1}),
                               ("get", "/health", None), ("post", "/v1/completions", {"x": 1})):
        response = requests.request(method, mock_server.url + path, json=body, timeout=30,
                                    headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize("request_id", ["a" * 129, "has space", "semi;colon", "tab\there"])
def test_request_id_outside_the_rule_is_replaced(mock_server, request_id):
    response = requests.get(mock_server.url + "/health", timeout=30,
                            headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] != request_id
    assert len(response.headers["X-Request-ID"]) == 32


def small_tokenizer():
    """A byte-level BPE tokenizer trained in memory (no model files needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 40,
                                   "héllo wörld ünïcode 日本語のテキスト 🙂🙂"], trainer=trainer)
    return tokenizer


def test_character_bound_never_refuses_a_prompt_that_fits():
    from inference_api.serving.prompts import PromptEncoder, PromptTooLong

    tokenizer = small_tokenizer()
    encoder = PromptEncoder({"max_seq_len": 64}, tokenizer=tokenizer)
    assert encoder.longest_token is not None
    for text in ["the quick brown fox " * 3, "日本語" * 20, "🙂" * 60, "a\n\n  b" * 9, "x" * 64,
                 "lazy dog" * 100, "ünïcode " * 30]:
        try:
            ids = encoder.encode(text)
        except PromptTooLong:
            # Refused by length alone: then it must really have more tokens than the context.
            ids = tokenizer.encode(text).ids
            assert len(ids) > 64, text
        else:
            assert len(text) <= len(ids) * encoder.longest_token
    with pytest.raises(PromptTooLong, match="characters"):
        encoder.encode("x" * (64 * encoder.longest_token + 1))


def test_prompt_tokenization_lets_other_threads_run():
    """The reader thread that feeds every stream keeps running while a long prompt is encoded."""
    from inference_api.serving.prompts import PromptEncoder

    tokenizer = small_tokenizer()
    encoder = PromptEncoder({"max_seq_len": None}, tokenizer=tokenizer)
    text = "the quick brown fox jumps over the lazy dog " * 20_000
    ticks, stop = [0], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        time.sleep(0.05)

        def ticks_during(encode) -> int:
            before = ticks[0]
            encode()
            return ticks[0] - before

        held = ticks_during(lambda: tokenizer.encode(text))  # holds the GIL: the control
        released = ticks_during(lambda: encoder.encode(text))
    finally:
        stop.set()
        thread.join()
    # Held, the ticker runs only at the call's edges; released, it runs all through the call.
    assert held < released
    assert released >= 5


@pytest.mark.slow
def test_real_tokenizer_refuses_a_huge_prompt_by_its_length(real_server):
    """The bound comes from the real vocabulary: the context times its longest token."""
    info = requests.get(real_server.url + "/v1/models", timeout=30).json()["data"][0]
    response = requests.post(f"{real_server.url}/inference/{MODEL}", timeout=60,
                             json={"text": "a" * 1_040_000})
    message = check_error(ROUTES["inference"], response, 400, "1040000 characters")
    assert f"context of {info['max_model_len']} tokens" in message
    fits = requests.post(f"{real_server.url}/inference/{MODEL}", timeout=120,
                         json={"text": "word " * 200, "max_tokens": 2})
    assert fits.status_code == 200


@pytest.mark.parametrize("path,shape", [("/" + "p" * 4000, "native"),
                                        ("/v1/" + "p" * 4000, "openai"),
                                        (f"/inference/{'m' * 4000}", "native")])
def test_long_paths_are_quoted_short_in_404s(mock_server, path, shape):
    method = "post" if path.startswith("/inference") else "get"
    response = requests.request(method, mock_server.url + path, json={"text": "a"}, timeout=30)
    check_error({"shape": shape}, response, 404, "characters)")


def test_v1_path_no_route_matches_gets_openais_shape(mock_server):
    # Found by the fuzzer: the path converter does not match a newline, so no /v1 route does.
    response = requests.get(mock_server.url + "/v1/models/a%0Ab", timeout=30)
    assert check_error({"shape": "openai"}, response, 404, "no route")
    assert response.json()["error"]["code"] == "unknown_url"


def test_a_body_over_the_limit_still_being_sent_gets_its_413_not_a_reset(mock_server):
    # As an nginx in front sends it: the whole body, after the API could already have answered.
    body = b'{"text": "' + b"x" * (MAX_BODY + (1 << 19)) + b'"}'
    head = (f"POST /inference/{MODEL} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with connect(mock_server.port, timeout=30) as sock:
        sock.sendall(head)
        for start in range(0, len(body), 1 << 16):  # still sending long after the refusal
            sock.sendall(body[start:start + (1 << 16)])  # a reset would raise here
            time.sleep(0.02)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert f"over {MAX_BODY} bytes" in json.loads(response.read())["message"]


# --- model names: MODELS serves several models; a bad name is each API's 404 -----------------

BAD_MODEL_NAMES = ["m" * 3000, "a\x00b", "a\nb", "tab\tname", "\x7f", "\u202eevil", "日本語",
                   "🙂", "../alpha", "alpha ", "ALPHA", "alpha/../beta", "%2e%2e", "", " "]
MODEL_ROUTES = {  # path (a {} for the name), body with the name, error shape
    "inference": ("/inference/{}", {"text": "hi"}, "native"),
    "predictions": ("/predictions/{}", {"text": "hi"}, "native"),
    "models": ("/v1/models/{}", None, "openai"),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 2}, "openai"),
    "chat": ("/v1/chat/completions",
             {"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}, "openai"),
    "responses": ("/v1/responses", {"input": "hi", "max_output_tokens": 2}, "openai"),
    "messages": ("/v1/messages",
                 {"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    "count_tokens": ("/v1/messages/count_tokens",
                     {"messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    "tokenize": ("/tokenize", {"prompt": "hi"}, "native"),
}


@pytest.fixture(scope="module")
def models_server():
    """A mock server with two models (MODELS)."""
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5", "DRAIN_TIMEOUT_S": "0",
                         "MODELS": "alpha=;max_users=2,beta=;max_users=2"})
    server.start(timeout=60)
    yield server
    server.stop()


def check_not_found(shape: str, response: requests.Response) -> None:
    """A 404 in the route's shape; the message is bounded whatever the name's length."""
    assert response.status_code == 404, response.text[:500]
    payload = response.json()
    if shape == "native":
        assert set(payload) == {"status_code", "message"} and payload["status_code"] == 404
    elif shape == "anthropic":
        assert payload["type"] == "error" and payload["error"]["type"] == "not_found_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["code"] in ("model_not_found", "unknown_url")
    assert len(response.content) <= MAX_MESSAGE_CHARS + 200


@pytest.mark.processes
@pytest.mark.parametrize("route", sorted(MODEL_ROUTES))
@pytest.mark.parametrize("name", BAD_MODEL_NAMES, ids=range(len(BAD_MODEL_NAMES)))
def test_a_bad_model_name_is_a_404_in_the_routes_shape(models_server, route, name):
    path, body, shape = MODEL_ROUTES[route]
    if "{}" in path:
        url = models_server.url + path.format(urllib.parse.quote(name, safe=""))
        response = requests.request("get" if body is None else "post", url, json=body, timeout=30)
    else:
        response = requests.post(models_server.url + path, json={**body, "model": name},
                                 timeout=30)
    check_not_found(shape, response)

