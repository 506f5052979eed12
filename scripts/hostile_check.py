#!/usr/bin/env python3
"""Attack the proxy and the Inference API as a hostile client would, and report what held.

Sections: 1 bad inputs, 2 slow connections, 3 disconnects, 4 backend death mid-stream,
5 SIGTERM drain. By default it starts a stack of its own on free loopback ports (the mock API
under gunicorn, the proxy in front with a random secret) and stops it at the end.
Exit code 1 if any check failed, 2 if the stack could not be started.
"""
from __future__ import annotations

import argparse
import base64
import functools
import gzip
import hashlib
import hmac
import http.client
import json
import os
import resource
import secrets
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import psutil
import requests
from requests.structures import CaseInsensitiveDict

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_ERROR_BODY = 8192  # an error answer longer than this echoes the input back
RAW = "@@raw@@"  # a field set to this is replaced by a raw JSON text
ROUTES = {  # name: (path, prompt field, stop field, a boolean field)
    "inference": ("/inference/{model}", "text", "stop_sequence", "ignore_eos"),
    "predictions": ("/predictions/{model}", "text", "stop_sequence", "return_prompt"),
    "generate": ("/generate", "text", "stop", "do_sample"),
    "completions": ("/v1/completions", "prompt", "stop", "stream"),
    "chat": ("/v1/chat/completions", "content", "stop", "stream"),
}
# Valid as documented (docs/api.md): OpenAI seeds have no range, chat content may be blank.
MAY_SUCCEED = {"completions:huge-seed", "chat:huge-seed", "completions:negative-seed",
               "chat:negative-seed", "chat:empty-prompt", "chat:whitespace-prompt",
               "token-exp-1e300"}
UNSUPPORTED = {"logprobs": True, "tools": [{"type": "function", "function": {"name": "f"}}],
               "response_format": {"type": "json_object"}, "echo": True, "best_of": 2,
               "suffix": "x", "logit_bias": {"1": 5}}  # OpenAI fields this server refuses


@dataclass
class Check:
    """One check: its figures and, when it failed, why."""

    section: str
    name: str
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: str = ""


@dataclass
class Target:
    """Where requests go: the API directly, or the proxy with a valid token."""

    name: str
    url: str
    headers: dict


@dataclass
class Stack:
    """The servers under attack; procs is empty when someone else started them."""

    api_url: str
    proxy_url: str
    secret: str
    api_pid: int | None = None
    header_timeout: str = ""
    model: str = ""
    mock: bool = True
    procs: list = field(default_factory=list)

    def token(self, **claims) -> str:
        """A valid token, claims added or replaced."""
        return jwt.encode({"team_id": "hostile", "token_id": "check", **claims}, self.secret)

    def targets(self) -> list[Target]:
        """The API directly, then the proxy with a valid token."""
        auth = {"Authorization": f"Bearer {self.token()}"}
        return [Target("direct", self.api_url, {}), Target("proxy", self.proxy_url, auth)]


# -- the stack -------------------------------------------------------------------------------

def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(argv: list[str], env: dict) -> subprocess.Popen:
    """Start a server in its own process group, its output in a temporary file."""
    log = tempfile.NamedTemporaryFile(prefix="hostile-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_path = log.name
    return proc


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll url/health until 200; raise with the log's tail if the process exits first."""
    up = lambda: proc.poll() is not None or get_health(url)[0] == 200  # noqa: E731
    if wait_until(up, timeout, 0.2) is None:
        raise RuntimeError(f"{url} not healthy after {timeout:.0f} s")
    if proc.poll() is not None:
        log = Path(proc.log_path).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{shlex.join(proc.args)} exited with {proc.returncode}:\n{log}")


def start_stack(args) -> Stack:
    """The API under gunicorn and the proxy in front of it, on free loopback ports."""
    api_port, proxy_port = free_port(), free_port()
    stack = Stack(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}",
                  secrets.token_urlsafe(32), mock=args.model == "mock")
    env = dict(os.environ, SERVICE_PORT=str(api_port), MOCK_MODEL=str(int(stack.mock)),
               MOCK_STEP_MS=str(args.mock_step_ms), JWT_SECRET=stack.secret,
               UPSTREAM_URL=stack.api_url, PROXY_HOST="127.0.0.1", PROXY_PORT=str(proxy_port))
    sources = [*(REPO / "proxy").rglob("*.py"), REPO / "docs" / "proxy.md"]
    if any("PROXY_HEADER_TIMEOUT" in p.read_text() for p in sources if p.exists()):
        env["PROXY_HEADER_TIMEOUT"] = stack.header_timeout = str(args.header_timeout)
    try:
        stack.procs.append(spawn([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py",
                                  "--bind", f"127.0.0.1:{api_port}"], env))
        stack.api_pid = stack.procs[0].pid
        wait_healthy(stack.api_url, stack.procs[0], 60 if stack.mock else 900)
        stack.procs.append(spawn(shlex.split(args.proxy_cmd), env))
        wait_healthy(stack.proxy_url, stack.procs[1], 60)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """SIGTERM every server started here, then SIGKILL its process group if it lingers."""
    for proc in stack.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in stack.procs:
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def get_health(url: str) -> tuple[int | None, dict]:
    """Status and JSON of url/health; (None, {}) if it does not answer."""
    try:
        response = requests.get(url + "/health", timeout=2)
        return response.status_code, response.json()
    except (requests.RequestException, ValueError):
        return None, {}


def idle(stack: Stack) -> bool:
    """Whether the API is ready with no busy row, queued prompt or open session."""
    status, h = get_health(stack.api_url)
    return status == 200 and h["busy_rows"] == h["queued"] == h["sessions"] == 0


def wait_until(condition, timeout: float, every: float = 0.05) -> float | None:
    """Seconds until condition() holds, polled every `every` s; None after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(every)
    return None


# -- HTTP: requests, or raw bytes where the bytes on the wire are the point --------------------

def hostport(url: str) -> tuple[str, int]:
    """(host, port) of an http URL."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or 80


def request_head(url: str, method: str, path: str, headers: dict) -> bytes:
    """A request line and headers, with Connection: close."""
    lines = [f"{method} {path} HTTP/1.1", "Host: {}:{}".format(*hostport(url)),
             *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw_exchange(url: str, head: bytes, parts=()) -> tuple:
    """Send head and body parts, stopping when an answer comes; (status, headers, body)."""
    with socket.create_connection(hostport(url), timeout=30) as sock:
        try:
            sock.sendall(head)
            for part in parts:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(part)
        except OSError:
            pass
        answer = http.client.HTTPResponse(sock)
        try:
            answer.begin()
        except (http.client.HTTPException, OSError):
            return None, {}, b""
        try:
            data = answer.read(4 << 20)
        except (http.client.HTTPException, OSError) as exc:
            data = getattr(exc, "partial", b"")
        return answer.status, CaseInsensitiveDict(answer.getheaders()), data


def post(target: Target, path: str, data: bytes, headers: dict, with_token: bool = True) -> tuple:
    """POST body bytes; (status, headers, body of an error); status None if dropped."""
    headers = {"Content-Type": "application/json", **(target.headers if with_token else {}),
               **headers}
    try:
        with requests.post(target.url + path, data=data, headers=headers, stream=True,
                           timeout=30) as response:
            error = response.content if response.status_code >= 300 else b""
            return response.status_code, response.headers, error
    except requests.RequestException:
        return None, {}, b""


# -- 1. bad inputs ------------------------------------------------------------------------------

def body(route: str, model: str, content="hello", raw: str = "", **fields) -> bytes:
    """A valid body for the route with fields changed; a value RAW becomes the text `raw`."""
    data = {"model": model} if route in ("completions", "chat") else {}
    if route == "chat":
        data["messages"] = [{"role": "user", "content": content}]
    else:
        data[ROUTES[route][1]] = content
    return json.dumps({**data, "max_tokens": 4, **fields}).replace(f'"{RAW}"', raw).encode()


def body_cases(route: str, model: str) -> list[tuple[str, bytes, dict]]:
    """(name, body, extra headers) of the bad bodies for one route."""
    stop, flag, deep = ROUTES[route][2], ROUTES[route][3], "[" * 100_000 + "]" * 100_000
    b = functools.partial(body, route, model)
    changes = {"nan-max-tokens": dict(max_tokens=RAW, raw="NaN"),
            "infinity-temperature": dict(temperature=RAW, raw="Infinity"),
            "minus-infinity-top-p": dict(top_p=RAW, raw="-Infinity"),
            "1e400-max-tokens": dict(max_tokens=RAW, raw="1e400"),
            "5000-digit-max-tokens": dict(max_tokens=RAW, raw="9" * 5000),
            "deep-prompt": dict(content=RAW, raw=deep), "deep-stop": {stop: RAW, "raw": deep},
            "surrogate-prompt": dict(content=RAW, raw='"\\udc00"'),
            "surrogate-inside-prompt": dict(content=RAW, raw='"a \\ud800 b"'),
            "surrogate-stop": {stop: RAW, "raw": '["\\udc00"]'},
            "huge-seed": dict(seed=10**30), "nan-string-temperature": dict(temperature="NaN"),
            "infinity-string-top-p": dict(top_p="Infinity"), "yes-for-boolean": {flag: "yes"},
            "2-for-boolean": {flag: 2}, "number-prompt": dict(content=123),
            "object-prompt": dict(content={"a": 1}), "null-prompt": dict(content=None),
            "list-max-tokens": dict(max_tokens=[1]), "word-max-tokens": dict(max_tokens="many"),
            "3.5-max-tokens": dict(max_tokens=3.5), "unknown-field": dict(bogus_field=1),
            "empty-prompt": dict(content=""), "whitespace-prompt": dict(content=" \n\t "),
            "1e9-max-tokens": dict(max_tokens=10**9), "negative-max-tokens": dict(max_tokens=-1),
            "zero-max-tokens": dict(max_tokens=0), "1e6-temperature": dict(temperature=1e6),
            "negative-temperature": dict(temperature=-1), "zero-top-p": dict(top_p=0),
            "17-stops": {stop: ["x"] * 17}, "906kb-stop-list": {stop: ["s" * 256] * 3540},
            "1040000-char-prompt": dict(content="a" * 1_040_000),
            "word-top-p": dict(top_p="high"), "2.5-top-k": dict(top_k=2.5),
            "1e6-top-k": dict(top_k=10**6), "negative-seed": dict(seed=-1),
            "word-seed": dict(seed="abc"), "number-stop": {stop: 5}, "object-stop": {stop: {}},
            "numbers-in-stop-list": {stop: [1, 2]}, "empty-stop": {stop: ""},
            "257-char-stop": {stop: "s" * 257}, "true-max-tokens": dict(max_tokens=True),
            "true-temperature": dict(temperature=True), "nested-list-prompt": dict(content=[["a"]]),
            "boolean-prompt": dict(content=True)}
    if route in ("completions", "chat"):
        changes |= {f"unsupported-{name}": {name: value} for name, value in UNSUPPORTED.items()}
    changes |= {"chat": {"no-messages": dict(messages=[]), "messages-object": dict(messages={}),
                      "root-role": dict(messages=[{"role": "root", "content": "hi"}]),
                      "image-part": dict(content=[{"type": "image_url", "image_url": {}}]),
                      "surrogate-part": dict(content=[{"type": "text", "text": RAW}],
                                             raw='"\\udc00"'),
                      "1000-choices": dict(n=1000)},
             "completions": {"token-id-prompt": dict(content=[1, 2, 3]),
                             "empty-prompt-list": dict(content=[]), "1000-choices": dict(n=1000)},
             "generate": {"text-and-prompt": dict(prompt="b"), "zero-samples": dict(num_samples=0),
                          "1000-samples": dict(num_samples=1000),
                          "negative-eos-id": dict(eos_token_ids=[-1]),
                          "17-eos-ids": dict(eos_token_ids=[1] * 17),
                          "zero-max-input-tokens": dict(max_input_tokens=0)},
             "inference": {"zero-top-k": dict(top_k=0), "object-session-id": dict(session_id={})},
             "predictions": {"zero-top-k": dict(top_k=0)}}.get(route, {})
    return [("malformed-json", b'{"text": "a", "max_tokens": ', {}), ("not-json", b"hello", {}),
            ("trailing-garbage", b() + b" x", {}), ("two-objects", b() + b(), {}),
            ("single-quotes", b"{'text': 'a'}", {}), ("trailing-comma", b'{"text": "a",}', {}),
            ("comment", b'{"text": "a" /* hi */}', {}),
            ("empty-body", b"", {}), ("array-body", b"[1, 2]", {}), ("string-body", b'"hi"', {}),
            ("null-body", b"null", {}), ("number-body", b"1e400", {}),
            ("deep-array-body", deep.encode(), {}),
            ("deep-object-body", ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(), {}),
            ("invalid-utf8", b(content=RAW, raw='"\xff"').replace(b"\xc3\xbf", b"\xff"), {}),
            ("gzip-body", gzip.compress(b()), {"Content-Encoding": "gzip"}),
            ("64kb-header", b(), {"X-Filler": "a" * 65536}),
            *((name, b(**fields), {}) for name, fields in changes.items())]


def chunked_cases(target: Target, path: str, data: bytes) -> list[tuple[str, bytes, list]]:
    """(name, head, body parts) of chunked bodies with bad sizes or beyond every body limit."""
    head = request_head(target.url, "POST", path, {**target.headers, "Transfer-Encoding":
                                                   "chunked", "Content-Type": "application/json"})
    big = [b"10000\r\n" + b"a" * 0x10000 + b"\r\n"] * 144  # 9.4 MB in chunks of 64 KB
    return [("chunked-size-zz", head, [b"zz\r\n" + data + b"\r\n0\r\n\r\n"]),
            ("chunked-size-minus-1", head, [b"-1\r\n" + data + b"\r\n0\r\n\r\n"]),
            ("chunked-9mb", head, [b'b\r\n{"text": "a\r\n', *big, b"0\r\n\r\n"])]


def sign(payload: str, secret: str, alg: str = "HS256") -> str:
    """A JWT over a raw payload text; an algorithm other than HS256/HS512 gets no signature."""
    b64 = lambda text: base64.urlsafe_b64encode(text).rstrip(b"=").decode()  # noqa: E731
    signing = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{b64(payload.encode())}"
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(alg)
    return signing + "." + (b64(hmac.new(secret.encode(), signing.encode(), digest).digest())
                            if digest else "")


def token_cases(stack: Stack) -> dict[str, str | None]:
    """Authorization header values that must not get through (exp 1e300 may)."""
    now, good, bearer = int(time.time()), '"team_id": "t", "token_id": "k"', "Bearer "
    return {"no-token": None, "basic-scheme": "Basic dXNlcjpwYXNz", "not-a-jwt": "Bearer x.y",
            "forged": bearer + sign("{%s}" % good, "wrong-" * 8),
            "expired": bearer + stack.token(exp=now - 3600),
            "not-yet-valid": bearer + stack.token(nbf=now + 3600),
            "exp-1e300": bearer + stack.token(exp=1e300),
            "nbf-1e300": bearer + stack.token(nbf=1e300),
            "exp-nan": bearer + sign('{%s, "exp": NaN}' % good, stack.secret),
            "exp-word": bearer + stack.token(exp="tomorrow"),
            "alg-none": bearer + sign("{%s}" % good, "", "none"),
            "hs512": bearer + sign("{%s}" % good, stack.secret, "HS512"),
            "no-team-id": bearer + sign('{"token_id": "k"}', stack.secret),
            "crlf-team-id": bearer + stack.token(team_id="t\r\nX-Team-ID: admin"),
            "10kb-token-id": bearer + stack.token(token_id="k" * 10_000),
            "object-team-id": bearer + stack.token(team_id={"a": 1}),
            "array-payload": bearer + sign("[1, 2]", stack.secret),
            "60kb-token": bearer + "a" * 60_000}


def bad_input_cases(stack: Stack, target: Target):
    """(name, thunk giving (status, headers, body)) of every bad request for one target."""
    for route, (template, *_) in ROUTES.items():
        path, valid = template.format(model=stack.model), body(route, stack.model)
        for name, data, headers in body_cases(route, stack.model):
            yield f"{route}:{name}", functools.partial(post, target, path, data, headers)
        for name, head, parts in chunked_cases(target, path, valid):
            yield f"{route}:{name}", functools.partial(raw_exchange, target.url, head, parts)
        for name, method, bad_path in (("get", "GET", path), ("10000-char-path", "POST",
                                                              path + "/" + "a" * 10_000)):
            head = request_head(target.url, method, bad_path, target.headers)
            yield f"{route}:{name}", functools.partial(raw_exchange, target.url, head)
        for name, auth in token_cases(stack).items() if target.name == "proxy" else ():
            headers = {"Authorization": auth} if auth else {}
            yield f"{route}:token-{name}", functools.partial(post, target, path, valid, headers,
                                                             False)
    paths = [("GET", "/v1/x/../../metrics"), ("GET", "/v1/x/%2e%2e/%2e%2e/metrics"),
             ("GET", "/v1/x/%2E%2E/%2E%2E/metrics"), ("GET", "/v1/x/..%2f..%2fmetrics"),
             ("POST", f"/health/../inference/{stack.model}"),  # these two without a token
             ("POST", f"/health/%2e%2e/inference/{stack.model}")]
    for method, path in paths if target.name == "proxy" else ():
        data = body("inference", stack.model) if method == "POST" else b""
        head = request_head(target.url, method, path, {
            **(target.headers if method == "GET" else {}), "Content-Length": len(data)})
        yield f"path:{path}", functools.partial(raw_exchange, target.url, head, [data])


def judge(status, headers, data: bytes) -> str:
    """What is wrong with an answer to a bad request; empty for a 4xx with a small JSON body."""
    if status is None:
        return "dropped without a status line"
    if status >= 500 or status < 400:
        return f"answered {status} {data[:100]!r}"
    try:
        json.loads(data)
    except ValueError:
        return f"{status} without a JSON body ({headers.get('Content-Type', 'no type')})"
    return f"{status} with a {len(data)}-byte body" if len(data) > MAX_ERROR_BODY else ""


def section_bad_inputs(stack: Stack, args) -> list[Check]:
    """Every bad request on every route, direct and through the proxy."""
    checks = []
    for target in stack.targets():
        check = Check("1 bad inputs", target.name)
        counts = check.figures = dict(tried=0, answered_4xx_json=0, answered_2xx_as_documented=0,
                                      answered_5xx=0, dropped=0, largest_error_body=0)
        deadline = time.monotonic() + args.section_seconds
        for name, send in bad_input_cases(stack, target):
            if time.monotonic() > deadline:
                check.failures.append(f"stopped after {args.section_seconds:.0f} s, cases left")
                break
            try:
                status, headers, data = send()
            except OSError as exc:  # could not even connect
                status, headers, data = None, {}, repr(exc).encode()
            counts["tried"] += 1
            counts["dropped"] += status is None
            counts["answered_5xx"] += (status or 0) >= 500
            if (status or 0) >= 400:
                counts["largest_error_body"] = max(counts["largest_error_body"], len(data))
            problem = judge(status, headers, data)
            if status == 200 and (name in MAY_SUCCEED or name.split(":")[-1] in MAY_SUCCEED):
                counts["answered_2xx_as_documented"] += 1
                problem = ""
            counts["answered_4xx_json"] += not problem and 400 <= (status or 0) < 500
            if problem:
                check.failures.append(f"{name}: {problem}")
        checks.append(check)
    return checks


# -- 2. slow connections ------------------------------------------------------------------------

def timed_stream(stack: Stack) -> float | str:
    """Seconds for one authenticated streamed request through the proxy, or what went wrong."""
    proxy, start = stack.targets()[1], time.monotonic()
    try:
        with requests.post(f"{proxy.url}/inference/{stack.model}", headers=proxy.headers,
                           json={"text": "timed", "max_tokens": 40, "ignore_eos": True},
                           stream=True, timeout=30) as response:
            if response.status_code != 200:
                return f"status {response.status_code}"
            for _ in response.iter_content(None):
                if time.monotonic() - start > 60:
                    return "not done in 60 s"
    except requests.RequestException as exc:
        return type(exc).__name__
    return time.monotonic() - start


def socket_gone(sock: socket.socket) -> bool:
    """Whether the server closed or answered a non-blocking socket."""
    try:
        return sock.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True


def drops(times: list[float], of: int) -> str:
    """How many sockets of `of` were dropped, and after how long."""
    return (f"{len(times)} of {of}, after {statistics.median(times):.1f} s median, "
            f"{max(times):.1f} s max" if times else f"0 of {of}")


def section_slow_sockets(stack: Stack, args) -> list[Check]:
    """Idle and slowloris sockets held open on the proxy while a normal stream is timed."""
    check = Check("2 slow connections", "proxy")
    alone = [timed_stream(stack) for _ in range(args.timed)]
    socks, opened, refused = {}, {}, 0
    for i in range(args.slow_sockets):  # even: idle; odd: a header line now and then
        try:
            sock = socket.create_connection(hostport(stack.proxy_url), timeout=5)
            if i % 2:
                sock.sendall(f"POST /inference/{stack.model} HTTP/1.1\r\nHost: x\r\n".encode())
            sock.setblocking(False)
            socks[i], opened[i] = sock, time.monotonic()
        except OSError:
            refused += 1
    beside: list = []
    timer = threading.Thread(target=lambda: beside.extend(
        timed_stream(stack) for _ in range(args.timed)))
    timer.start()
    hold = max(args.slow_seconds, float(stack.header_timeout or 0) + 10)
    start = last_line = time.monotonic()
    dropped: dict[int, float] = {}
    while (time.monotonic() - start < hold or timer.is_alive()) and \
            time.monotonic() - start < hold + 70 * args.timed:
        time.sleep(0.5)
        send = time.monotonic() - last_line >= args.slow_interval
        last_line = time.monotonic() if send else last_line
        for i, sock in socks.items():
            if i in dropped:
                continue
            try:
                if send and i % 2:
                    sock.send(f"X-Slow-{int(time.monotonic())}: x\r\n".encode())
                gone = socket_gone(sock)
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                dropped[i] = time.monotonic() - opened[i]
    for sock in socks.values():
        sock.close()
    timer.join(60)
    base_s, slow_s = (statistics.median([x for x in xs if isinstance(x, float)] or [float("nan")])
                      for xs in (alone, beside))
    errors = [t for t in alone + beside if not isinstance(t, float)]
    slow_drops = [t for i, t in dropped.items() if i % 2]
    check.figures = dict(
        sockets_open=len(socks), refused=refused, held_s=round(hold, 1),
        header_timeout=stack.header_timeout or "none (the proxy has no PROXY_HEADER_TIMEOUT)",
        stream_median_s_alone=round(base_s, 3), stream_median_s_beside_slow=round(slow_s, 3),
        timed_errors=errors, slowloris_dropped=drops(slow_drops, len(socks) // 2),
        idle_dropped=drops([t for i, t in dropped.items() if i % 2 == 0], (len(socks) + 1) // 2))
    if errors:
        check.failures.append(f"timed requests failed: {errors}")
    if not slow_s <= max(2 * base_s, base_s + 0.5):
        check.failures.append(f"a stream took {slow_s:.2f} s beside slow sockets, "
                              f"{base_s:.2f} s alone")
    if refused:
        check.failures.append(f"{refused} of {args.slow_sockets} connections refused or timed out")
    early = [t for t in slow_drops if stack.header_timeout and t < float(stack.header_timeout) - 1]
    if early:  # docs/proxy.md: headers have the header timeout, counted from the connection's open
        check.failures.append(f"{len(early)} slowloris sockets dropped after {max(early):.1f} s at "
                              f"most, before the header timeout of {stack.header_timeout} s")
    if stack.header_timeout and len(dropped) < len(socks):
        check.failures.append(f"{len(socks) - len(dropped)} slow sockets open after {hold:.0f} s")
    return [check]


# -- 3. disconnects -----------------------------------------------------------------------------

def long_body(route: str, stack: Stack, args, stream: bool) -> dict:
    """A body asking for a long generation on the route."""
    data = json.loads(body(route, stack.model, "go on and on", max_tokens=args.max_tokens))
    data |= {"ignore_eos": True} if route != "generate" else {}  # the mock never ends early
    return data | ({"stream": stream} if route in ("completions", "chat", "generate") else {})


def open_request(target: Target, path: str, data: dict) -> socket.socket:
    """A socket with a JSON POST sent on it and its answer unread."""
    payload = json.dumps(data).encode()
    sock = socket.create_connection(hostport(target.url), timeout=15)
    headers = {**target.headers, "Content-Type": "application/json", "Content-Length": len(payload)}
    sock.sendall(request_head(target.url, "POST", path, headers) + payload)
    return sock


def first_body_bytes(sock: socket.socket) -> None:
    """Read past a 200's headers to the first bytes of its body; raise on anything else."""
    seen = b""
    while b"\r\n\r\n" not in seen or seen.endswith(b"\r\n\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the first bytes")
        seen += chunk
    if not seen.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {seen[:40]!r}")


def disconnect_round(stack: Stack, target: Target, route: str, stream: bool, args) -> float:
    """Seconds from closing N long requests until the API is idle (inf if not in time)."""
    wait_until(lambda: idle(stack), args.free_timeout, 0.2)
    path = ROUTES[route][0].format(model=stack.model)
    socks = [open_request(target, path, long_body(route, stack, args, stream))
             for _ in range(args.clients)]
    try:
        for sock in socks if stream else ():
            first_body_bytes(sock)
        time.sleep(0 if stream else 0.5)
        sessions = get_health(stack.api_url)[1].get("sessions", 0)
        if sessions < args.clients:
            raise ConnectionError(f"only {sessions} of {args.clients} requests running")
    finally:
        for sock in socks:
            sock.close()
    seconds = wait_until(lambda: idle(stack), args.free_timeout)
    return float("inf") if seconds is None else seconds


def section_disconnects(stack: Stack, args) -> list[Check]:
    """Clients that leave mid-generation: how long until their rows are free."""
    checks = []
    for target in stack.targets():
        for route, stream in (("inference", True), ("chat", True), ("completions", False),
                              ("generate", False)):
            kind = "stream" if stream else "json"
            check = Check("3 disconnects", f"{target.name} {route} {kind}")
            times = []
            for _ in range(args.rounds):
                try:
                    times.append(disconnect_round(stack, target, route, stream, args))
                except OSError as exc:
                    check.failures.append(f"request failed: {exc}")
                    break
                if times[-1] > 5:
                    break  # a slow release needs no second look
            if times:
                check.figures = dict(rounds=len(times), max_s=round(max(times), 2),
                                     median_s=round(statistics.median(times), 2))
            if times and max(times) > args.disconnect_target:
                check.failures.append(f"rows free after {max(times):.2f} s (target "
                                      f"{args.disconnect_target} s; inf: not in "
                                      f"{args.free_timeout} s)")
            checks.append(check)
    return checks


# -- 4. backend death ---------------------------------------------------------------------------

def backend_process(api_pid: int) -> psutil.Process | None:
    """The decode backend: the gunicorn worker's child that is not a resource tracker."""
    for worker in psutil.Process(api_pid).children():
        for child in worker.children():
            if "resource_tracker" not in " ".join(child.cmdline()):
                return child
    return None


def open_stream(target: Target, path: str, data: dict) -> tuple:
    """A streamed POST read to its first chunk; (response, its chunk iterator, bytes so far)."""
    response = requests.post(target.url + path, headers=target.headers, json=data,
                             stream=True, timeout=(5, 45))
    chunks = response.iter_content(None)  # kept: dropping it would close the connection
    return response, chunks, next(chunks, b"")


def finish_stream(route: str, response, chunks, seen: bytes) -> str:
    """Read a stream whose backend died to its end; empty if the client could tell."""
    try:
        seen += b"".join(chunks)
        cut = False
    except requests.RequestException as exc:
        if "timed out" in str(exc):
            return "no end within the 45 s read timeout"
        cut = True
    finally:
        response.close()
    if route in ("inference", "predictions"):
        return "" if cut else f"ended like a complete stream after {len(seen)} bytes"
    if (b'"error"' in seen or b'"status_code"' in seen) and b"[DONE]" not in seen:
        return ""
    return f"{'cut' if cut else 'ended'} without an error event: ...{seen[-60:]!r}"


def section_backend_death(stack: Stack, args) -> list[Check]:
    """Kill the backend during a stream on every route: can each client tell?"""
    process = backend_process(stack.api_pid) if stack.api_pid else None
    if process is None:
        return [Check("4 backend death", "all", skipped="backend process not found (--api-pid)")]
    streams = [(target.name, route, *open_stream(target, template.format(model=stack.model),
                                                 long_body(route, stack, args, True)))
               for target in stack.targets() for route, (template, *_) in ROUTES.items()]
    process.kill()
    killed = time.monotonic()
    with ThreadPoolExecutor(len(streams)) as pool:
        outcomes = list(pool.map(lambda s: finish_stream(*s[1:]), streams))
    ended = time.monotonic() - killed
    back = wait_until(lambda: get_health(stack.api_url)[0] == 200, 120 if stack.mock else 900, 0.2)
    back = None if back is None else time.monotonic() - killed
    checks = []
    for target in stack.targets():
        check = Check("4 backend death", target.name, dict(
            streams=len(ROUTES), all_ended_after_kill_s=round(ended, 2),
            healthy_again_after_kill_s=round(back, 2) if back is not None else "not in time"))
        check.failures = [f"{route} ({response.status_code}): {problem}"
                          for (name, route, response, *_), problem in zip(streams, outcomes)
                          if name == target.name and problem]
        checks.append(check)
    return checks


# -- 5. SIGTERM drain ---------------------------------------------------------------------------

def probe(method: str, url: str, headers: dict, start: float, data: dict | None = None) -> dict:
    """Status, Retry-After and time since `start` of one request; status None if refused."""
    try:
        response = requests.request(method, url, headers=headers, json=data, timeout=5)
        return dict(status=response.status_code, retry_after=response.headers.get("Retry-After"),
                    at_s=round(time.monotonic() - start, 2))
    except requests.RequestException as exc:
        return dict(status=None, error=type(exc).__name__, at_s=round(time.monotonic() - start, 2))


def section_drain(stack: Stack, args) -> list[Check]:
    """SIGTERM the API during streams: 503s at once, and the running streams finish."""
    if not stack.api_pid:
        return [Check("5 SIGTERM drain", "all", skipped="no API pid (--api-pid)")]
    # Streams that end well within the API's DRAIN_TIMEOUT_S (30 s by default).
    text, n, path = "drain me", 300 if stack.mock else 60, f"/inference/{stack.model}"
    streams = [open_stream(t, path, {"text": text, "max_tokens": n, "ignore_eos": True})
               for t in stack.targets()]
    os.kill(stack.api_pid, signal.SIGTERM)
    start = time.monotonic()
    time.sleep(0.2)
    probes = [(probe("GET", t.url + "/health", {}, start),
               probe("POST", t.url + path, t.headers, start, {"text": "new", "max_tokens": 4}))
              for t in stack.targets()]
    checks = []
    for target, (response, chunks, seen), (health, new) in zip(stack.targets(), streams, probes):
        try:
            seen += b"".join(chunks)
            finished = True
        except requests.RequestException as exc:
            finished = f"cut ({type(exc).__name__})"
        if finished is True and stack.mock:
            from inference_api.mock import mock_answer
            finished = seen.decode(errors="replace") == mock_answer(text, n) or "text differs"
        check = Check("5 SIGTERM drain", target.name, dict(
            health=health, new_generation=new, stream_finished=finished,
            stream_done_after_s=round(time.monotonic() - start, 2)))
        if health["status"] != 503 or health["at_s"] > 1:
            check.failures.append(f"/health: {health} (want 503 within 1 s)")
        if new["status"] != 503 or not new.get("retry_after") or new["at_s"] > 1:
            check.failures.append(f"new generation: {new} (want 503 with Retry-After within 1 s)")
        if finished is not True:
            check.failures.append(f"running stream: {finished}")
        checks.append(check)
    return checks


# -- report -------------------------------------------------------------------------------------

SECTIONS = {"1": section_bad_inputs, "2": section_slow_sockets, "3": section_disconnects,
            "4": section_backend_death, "5": section_drain}


def print_report(checks: list[Check], limit: int = 40) -> None:
    """One line per check, its figures, then its failures."""
    for check in checks:
        verdict = "FAIL" if check.failures else f"skipped: {check.skipped}" if check.skipped \
            else "pass"
        print(f"[{check.section}] {check.name}: {verdict}")
        for key, value in check.figures.items():
            print(f"    {key}: {value}")
        for failure in check.failures[:limit]:
            print(f"    ! {failure}")
        if len(check.failures) > limit:
            print(f"    ! ... and {len(check.failures) - limit} more (--json has all)")
    failed = sum(bool(c.failures) for c in checks)
    skipped = sum(bool(c.skipped) for c in checks)
    print(f"\n{len(checks)} checks: {failed} failed, {skipped} skipped")


def parse_args(argv=None):
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("mock", "real"), default="mock", help="backend to start")
    p.add_argument("--proxy-cmd", default=f"{BIN / 'gunicorn'} --config proxy/gunicorn.conf.py",
                   help="command that starts the proxy, run from the repository root")
    p.add_argument("--api-url", help="attack a running API instead of starting one")
    p.add_argument("--proxy-url", help="the running proxy in front of --api-url")
    p.add_argument("--secret", help="the running proxy's JWT_SECRET (default: $JWT_SECRET)")
    p.add_argument("--api-pid", type=int, help="the running API's gunicorn master (sections 4, 5)")
    p.add_argument("--sections", default="12345", help="which sections to run, e.g. 13")
    p.add_argument("--mock-step-ms", type=float, default=10.0)
    p.add_argument("--section-seconds", type=float, default=300.0, help="bound of section 1")
    p.add_argument("--slow-sockets", type=int, default=1000)
    p.add_argument("--slow-seconds", type=float, default=30.0, help="how long they stay open")
    p.add_argument("--slow-interval", type=float, default=3.0, help="seconds between header lines")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="PROXY_HEADER_TIMEOUT for the proxy started here, if it has that setting")
    p.add_argument("--timed", type=int, default=5, help="timed streams, alone and beside")
    p.add_argument("--clients", type=int, default=8, help="requests per disconnect round")
    p.add_argument("--rounds", type=int, default=3, help="disconnect rounds per case")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="length of the long generations (default 2000 mock, 1000 real)")
    p.add_argument("--free-timeout", type=float, default=30.0, help="longest wait for free rows")
    p.add_argument("--disconnect-target", type=float, default=2.0, help="seconds; slower fails")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.api_url and not (args.proxy_url and (args.secret or os.environ.get("JWT_SECRET"))):
        p.error("--api-url needs --proxy-url and --secret (or JWT_SECRET)")
    args.max_tokens = args.max_tokens or (2000 if args.model == "mock" else 1000)
    return args


def main() -> int:
    """Start or find the stack, run the sections, print the report; 1 if a check failed."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the servers on the way out
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the servers inherit it too
    wanted = min(hard, max(soft, args.slow_sockets + 2048))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        if args.api_url:
            stack = Stack(args.api_url.rstrip("/"), args.proxy_url.rstrip("/"),
                          args.secret or os.environ["JWT_SECRET"], args.api_pid,
                          os.environ.get("PROXY_HEADER_TIMEOUT", ""), mock=args.model == "mock")
        else:
            stack = start_stack(args)
    except RuntimeError as exc:
        print(f"error: could not start the stack: {exc}", file=sys.stderr)
        return 2
    checks: list[Check] = []
    try:
        stack.model = get_health(stack.api_url)[1].get("model", "")
        if not stack.model:
            print(f"error: {stack.api_url}/health is not ready", file=sys.stderr)
            return 2
        for key in args.sections:
            try:
                checks += SECTIONS[key](stack, args) if key in SECTIONS else []
            except Exception as exc:  # noqa: BLE001 - a section that breaks is a failed check
                name = f"{key} {SECTIONS[key].__name__.removeprefix('section_')}"
                failure = f"stopped: {type(exc).__name__}: {exc}"
                checks.append(Check(name, "all", failures=[failure]))
            print(f"section {key} done", file=sys.stderr, flush=True)
    finally:
        stop_stack(stack)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=1, default=str))
    else:
        print_report(checks)
    return 1 if any(c.failures for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
