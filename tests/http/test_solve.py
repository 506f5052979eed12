"""POST /solve/math and /solve/coding through a real gunicorn server: the answer in one piece and
as server-sent events, the extracted answer (null when absent), the templates, the 400s."""
from __future__ import annotations

import json
import signal

import pytest
import requests

from helpers import MODEL, api_server, backend_process, sse_events
from inference_api.config import Config
from inference_api.http.solve.prompts import DEFAULT_CODING_PROMPT, DEFAULT_MATH_PROMPT
from inference_api.mock.text import mock_answer
from common.settings import ConfigError

FIELDS = {"math": "answer", "coding": "code"}
CONTEXT = 256


@pytest.fixture(scope="module")
def server():
    """A mock server whose math template is the problem alone, so that the mock (which answers
    with the prompt's words) can be made to write a boxed answer."""
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5", "DRAIN_TIMEOUT_S": "0",
                         "MAX_SEQ_LEN": str(CONTEXT), "SOLVE_MATH_PROMPT": "{problem}",
                         "SOLVE_CODING_PROMPT": "Write code: {problem}"})
    server.start(timeout=60)
    yield server
    server.stop()


def solve(server, kind: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server.url}/solve/{kind}", data=data, timeout=60,
                         headers={"Content-Type": "application/json"}, **kw)


def mock_prompt(content: str) -> str:
    """The prompt the mock's chat template makes of one user turn."""
    return f"user: {content}\nassistant:"


BOXED = "What is 6 times 7? \\boxed{42}"  # 8 words in the mock's prompt: a box in 8 tokens


def test_math_answer_in_one_piece_with_the_boxed_answer(server):
    response = solve(server, "math", {"problem": BOXED, "max_new_tokens": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["problem", "solution", "answer", "generation_time", "finish_reason",
                          "usage"]
    solution = mock_answer(mock_prompt(BOXED), 8)
    assert "\\boxed{42}6 " in solution  # the mock's word 6, as the test means it to be
    assert body["problem"] == BOXED and body["solution"] == solution
    assert body["answer"] == "42"
    assert body["generation_time"] > 0 and body["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 8 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8


def test_the_answer_is_null_when_the_solution_gives_none(server):
    body = solve(server, "math", {"problem": "no box here", "max_new_tokens": 12}).json()
    assert body["solution"] == mock_answer(mock_prompt("no box here"), 12)
    assert body["answer"] is None
    coding = solve(server, "coding", {"problem": "print hello", "max_new_tokens": 5}).json()
    assert list(coding) == ["problem", "solution", "code", "generation_time", "finish_reason",
                            "usage"]
    assert coding["solution"] == mock_answer(mock_prompt("Write code: print hello"), 5)
    assert coding["code"] is None  # the mock writes no fenced block


@pytest.mark.parametrize("kind", ["math", "coding"])
def test_streamed_solution_arrives_in_pieces_then_the_answer(server, kind):
    response = solve(server, kind, {"problem": BOXED, "max_new_tokens": 8, "stream": True},
                     stream=True)
    assert response.status_code == 200
    seen = sse_events(response)
    *pieces, last = seen
    assert len(pieces) >= 2 and all(list(p) == ["text"] for p in pieces)
    streamed = "".join(p["text"] for p in pieces)
    assert last["solution"] == streamed and last["problem"] == BOXED
    assert last[FIELDS[kind]] == ("42" if kind == "math" else None)
    assert last["generation_time"] > 0 and last["usage"]["completion_tokens"] == 8
    assert last["finish_reason"] == "length"


def test_temperature_and_defaults_are_taken(server):
    body = solve(server, "math", {"problem": "two words", "temperature": 1.5}).json()
    # max_new_tokens left out: 512, within what the context leaves.
    assert body["usage"]["completion_tokens"] == min(512, CONTEXT - body["usage"]["prompt_tokens"])
    assert body["finish_reason"] == "length"


def test_the_default_templates_wrap_the_problem(mock_server):
    for kind, template in (("math", DEFAULT_MATH_PROMPT), ("coding", DEFAULT_CODING_PROMPT)):
        body = solve(mock_server, kind, {"problem": "add {problem} 2 and 3", "max_new_tokens": 40})
        assert body.status_code == 200, body.text
        # The problem goes in as given: a {problem} inside it is not replaced again.
        content = template.replace("{problem}", "add {problem} 2 and 3")
        assert body.json()["solution"] == mock_answer(mock_prompt(content), 40)


def test_a_served_model_may_be_named_and_another_is_404(server):
    named = solve(server, "math", {"problem": BOXED, "max_new_tokens": 8, "model": MODEL})
    assert named.status_code == 200 and named.json()["answer"] == "42"
    other = solve(server, "coding", {"problem": "x", "model": "other-model"})
    assert other.status_code == 404
    assert other.json() == {"status_code": 404, "message": other.json()["message"]}
    assert "other-model" in other.json()["message"] and MODEL in other.json()["message"]


BAD = [
    # (body, words in the message)
    ({}, "problem is required"),
    ({"problem": ""}, "problem"),
    ({"problem": "  \n "}, "must not be empty"),
    ({"problem": 5}, "problem"),
    ({"problem": ["a"]}, "problem"),
    ({"problem": "x" * 16_385}, "at most 16384 characters"),
    ({"problem": "x", "max_new_tokens": 0}, "max_new_tokens"),
    ({"problem": "x", "max_new_tokens": 2049}, "max_new_tokens"),
    ({"problem": "x", "max_new_tokens": "ten"}, "max_new_tokens"),
    ({"problem": "x", "max_new_tokens": True}, "not true or false"),
    ({"problem": "x", "max_new_tokens": 2.5}, "max_new_tokens"),
    ({"problem": "x", "temperature": -0.1}, "temperature"),
    ({"problem": "x", "temperature": 2.01}, "less than or equal to 2"),
    ({"problem": "x", "temperature": "hot"}, "temperature"),
    ({"problem": "x", "stream": "yes"}, "stream"),
    ({"problem": "x", "stream": 1}, "stream"),
    ({"problem": "x", "top_p": 0.9}, "top_p is not a known field"),
    ({"problem": "x", "max_tokens": 9}, "max_tokens is not a known field"),
    ({"problem": "x", "model": 5}, "model"),
    ({"problem": "x", "model": ""}, "model"),
    (b"{not json", "malformed JSON"),
    (b"[1]", "must be an object"),
]


@pytest.mark.parametrize("kind", ["math", "coding"])
@pytest.mark.parametrize("body,words", BAD, ids=[str(b)[:40] for b, _ in BAD])
def test_a_bad_body_is_a_400_in_the_native_shape(server, kind, body, words):
    response = solve(server, kind, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert set(payload) == {"status_code", "message"} and payload["status_code"] == 400
    assert words in payload["message"], payload["message"]
    assert len(payload["message"]) <= 600


@pytest.mark.parametrize("body", [
    {"problem": "word " * (CONTEXT + 10)},  # the prompt alone is over the context
    {"problem": "short", "max_new_tokens": CONTEXT},  # the prompt and the answer are
])
def test_a_prompt_over_the_context_is_a_400_as_on_the_other_routes(server, body):
    response = solve(server, "math", body)
    assert response.status_code == 400, response.text
    assert "context" in response.json()["message"]
    inference = requests.post(f"{server.url}/inference/{MODEL}", timeout=60, json={
        "text": body["problem"], "max_tokens": body.get("max_new_tokens")})
    assert inference.status_code == response.status_code


def test_get_is_405(server):
    response = requests.get(f"{server.url}/solve/math", timeout=30)
    assert response.status_code == 405 and "POST" in response.headers["Allow"].split(", ")


@pytest.mark.parametrize("name", ["SOLVE_MATH_PROMPT", "SOLVE_CODING_PROMPT"])
def test_a_template_without_the_placeholder_stops_the_server_naming_it(name):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: "Solve this: {problm}"})
    assert Config.from_env({name: "Solve {problem} {x}"})  # other braces are text
    assert Config.from_env({name: ""})  # empty: the default


@pytest.mark.processes
def test_a_generation_failing_mid_stream_ends_with_the_error_event():
    with api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "10"}) as server:
        response = solve(server, "math", {"problem": "doomed", "max_new_tokens": 1000,
                                          "stream": True}, stream=True)
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert "text" in json.loads(first[len(b"data: "):])
        backend_process(server).send_signal(signal.SIGKILL)
        rest = [json.loads(line[len(b"data: "):]) for line in lines if line]
        last = rest[-1]
        assert last["status_code"] == 503 and "interrupted" in last["message"]
        assert last["retry_after"] == 5
        assert all(list(event) == ["text"] for event in rest[:-1])  # no answer after it


@pytest.mark.slow
@pytest.mark.parametrize("kind, problem", [
    ("math", "What is 12 plus 30?"),
    ("coding", "Write a Python function that returns the sum of a list of numbers."),
])
def test_the_real_model_answers_with_the_documented_fields(real_server, kind, problem):
    response = requests.post(f"{real_server.url}/solve/{kind}", timeout=300,
                             json={"problem": problem, "max_new_tokens": 200})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["problem", "solution", FIELDS[kind], "generation_time",
                          "finish_reason", "usage"]
    assert body["problem"] == problem and body["solution"].strip()
    extracted = body[FIELDS[kind]]
    assert extracted is None or (isinstance(extracted, str) and extracted.strip())
    if extracted is not None:  # read from the solution, never made up
        assert extracted in body["solution"]
    assert body["usage"]["completion_tokens"] <= 200 and body["generation_time"] > 0
    streamed = requests.post(f"{real_server.url}/solve/{kind}", timeout=300, stream=True,
                             json={"problem": problem, "max_new_tokens": 40, "stream": True})
    *pieces, last = sse_events(streamed)
    assert "".join(p["text"] for p in pieces) == last["solution"] and FIELDS[kind] in last
