"""Helpers shared by the test modules: polling, API and proxy servers, requests, the OpenAI client,
tokens and metrics."""
from __future__ import annotations

import json
import os
import sys
import time
import uuid

import jwt
import openai
import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from net import free_port
from processes import REPO, ServerProcess

# --- polling ----------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll predicate() until it is truthy (True) or timeout seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# --- the Inference API ------------------------------------------------------------------------

MODEL = "SmolLM2-135M-Instruct"
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


def api_server(env: dict | None = None, port: int | None = None) -> ServerProcess:
    """An Inference API server under gunicorn with gunicorn.conf.py (not started)."""
    port = port or free_port()
    return ServerProcess([GUNICORN, "--config", "gunicorn.conf.py"], port,
                         env={"SERVICE_PORT": str(port), **(env or {})}, cwd=REPO)


def post(server, body, route="inference", model=MODEL, timeout=30, **kw) -> requests.Response:
    """POST a JSON body to /<route>/<model> of the server."""
    return requests.post(f"{server.url}/{route}/{model}", json=body, timeout=timeout, **kw)


def post_body(server, body: dict | bytes) -> requests.Response:
    """POST a JSON object, or raw bytes sent as JSON, to the inference route."""
    url = f"{server.url}/inference/{MODEL}"
    if isinstance(body, bytes):
        return requests.post(url, data=body, headers={"Content-Type": "application/json"})
    return requests.post(url, json=body)


def health(server) -> dict:
    """The JSON body of GET /health."""
    return requests.get(server.url + "/health", timeout=5).json()


def leave_streams(server, streams: list) -> None:
    """Read the first event of each open stream, see their rows busy, close them all, and wait
    until the server has freed every row (a test fails here if leaving does not cancel)."""
    for stream in streams:
        next(iter(stream))
    assert wait_for(lambda: health(server)["busy_rows"] >= len(streams))
    for stream in streams:
        stream.close()
    assert wait_for(lambda: health(server)["busy_rows"] == 0)


def health_response(server) -> requests.Response | None:
    """GET /health of a server (or a base URL), or None while it does not answer yet."""
    url = server if isinstance(server, str) else server.url
    try:
        return requests.get(url + "/health", timeout=2)
    except requests.RequestException:
        return None


def health_status(server) -> int:
    """The status of GET /health of a server (or a base URL), 0 while it does not answer yet."""
    response = health_response(server)
    return 0 if response is None else response.status_code


def backend_process(server) -> psutil.Process:
    """The decode-backend process under the gunicorn master (the worker's spawned child)."""
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                return child
        except psutil.Error:  # it ended while we looked
            continue
    raise AssertionError("no backend process")


def client_for(server) -> openai.OpenAI:
    """The official client, pointed at the server; no retries, so errors show as they are."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any-key", max_retries=0,
                         timeout=60)


def chat_prompt(messages: list[dict]) -> str:
    """The prompt text the mock's chat template makes of the messages."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from inference_api.mock.runner import MOCK_CHAT_TEMPLATE

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        MOCK_CHAT_TEMPLATE)
    return template.render(messages=messages, add_generation_prompt=True)


# Nested objects, arrays, enums and required fields: a structured output's schema.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 30},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}

# (name, body, words the 400 message must contain), for the mock and the real model alike.
BAD_REQUESTS = [
    ("malformed JSON", b"{not json", "malformed JSON"),
    ("not an object", b"[1, 2]", "must be an object"),
    ("missing text", {"max_tokens": 3}, "text is required"),
    ("empty text", {"text": ""}, "text"),
    ("blank text", {"text": "   "}, "text"),
    ("text not a string", {"text": 42}, "text=42"),
    ("temperature too high", {"text": "a", "temperature": 9}, "temperature=9"),
    ("temperature not a number", {"text": "a", "temperature": "hot"}, "temperature='hot'"),
    ("top_k too big", {"text": "a", "top_k": 5000}, "less than or equal to 1000"),
    ("top_k zero", {"text": "a", "top_k": 0}, "top_k=0"),
    ("top_p zero", {"text": "a", "top_p": 0}, "top_p=0"),
    ("top_p above one", {"text": "a", "top_p": 1.5}, "top_p=1.5"),
    ("max_tokens zero", {"text": "a", "max_tokens": 0}, "max_tokens=0"),
    ("max_tokens too big", {"text": "a", "max_tokens": 5000}, "less than or equal to 2048"),
    ("stop of a wrong type", {"text": "a", "stop_sequence": 5}, "stop_sequence"),
    ("empty stop", {"text": "a", "stop_sequence": [""]}, "stop_sequence"),
    ("return_prompt not a boolean", {"text": "a", "return_prompt": "perhaps"}, "return_prompt"),
    ("boolean as a string", {"text": "a", "return_prompt": "false"}, "valid boolean"),
    ("negative seed", {"text": "a", "seed": -1}, "seed=-1"),
    ("repetition_penalty zero", {"text": "a", "repetition_penalty": 0}, "repetition_penalty=0"),
    ("unknown field", {"text": "a", "temprature": 1}, "temprature is not a known field"),
    ("prompt too long", {"text": "word " * 2040, "max_tokens": 10}, "2040 tokens"),
]

# --- the JWT proxy ----------------------------------------------------------------------------

SECRET = "proxy-test-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too
PROXY_CONF = str(REPO / "proxy" / "gunicorn.conf.py")


def proxy_argv(*extra: str) -> list[str]:
    """The command that runs the proxy, as deployed."""
    return [sys.executable, "-m", "gunicorn", "-c", PROXY_CONF, *extra]


def start_proxy(upstream_url: str, health_path: str = "/health", **env: str) -> ServerProcess:
    """A ServerProcess running the proxy in front of upstream_url (not started yet); its
    metrics_url is its metrics port's, where health_path "/metrics" is waited for too."""
    port, metrics_port = free_port(), free_port()
    env = {"PROXY_HOST": "127.0.0.1", "PROXY_PORT": str(port), "UPSTREAM_URL": upstream_url,
           "JWT_SECRET": SECRET, "PROXY_UPSTREAM_TIMEOUT": "", "PROXY_MAX_STREAMS_PER_TOKEN": "",
           "PROXY_METRICS_PORT": str(metrics_port), **env}
    metrics_url = f"http://127.0.0.1:{env['PROXY_METRICS_PORT']}"
    if health_path == "/metrics":
        health_path = metrics_url + "/metrics"
    server = ServerProcess(proxy_argv(), port, env=env, health_path=health_path)
    server.metrics_url = metrics_url
    return server


def make_token(secret: str = SECRET, algorithm: str = "HS256", **claims) -> str:
    """A token with fresh team_id/token_id unless given; a claim given as None is left out."""
    payload = {"team_id": "team-a", "token_id": f"tok-{uuid.uuid4().hex[:12]}", **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret,
                      algorithm=algorithm)


def bearer(token: str, scheme: str = "Bearer") -> dict:
    """The Authorization header carrying token."""
    return {"Authorization": f"{scheme} {token}"}


def claims_of(token: str) -> dict:
    """The token's claims, signature unchecked."""
    return jwt.decode(token, options={"verify_signature": False})


def seen_headers(echo: dict) -> dict:
    """The echoed headers, names lower-cased."""
    return {name.lower(): value for name, value in echo["headers"]}


# --- metrics ----------------------------------------------------------------------------------


def scrape(server: ServerProcess) -> dict:
    """Every sample of the server's /metrics (a proxy's on its metrics port), keyed by (name,
    sorted labels)."""
    response = requests.get(getattr(server, "metrics_url", server.url) + "/metrics", timeout=5)
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def sample(samples: dict, name: str, **labels) -> float:
    """One sample's value from scrape()'s result, 0 when it is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sse_events(response: requests.Response) -> list[dict]:
    """The JSON payload of every server-sent event of a JSON route's stream, in order."""
    assert response.headers["Content-Type"].startswith("text/event-stream")
    out = []
    for line in response.iter_lines():
        if line:
            assert line.startswith(b"data: ")
            out.append(json.loads(line[len(b"data: "):]))
    return out
