"""Section 1: every bad request and bad token on every route, direct and through the proxy; then
bodies over the limits beside normal requests (over_limit.py)."""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time

from .bad_bodies import body_cases, chunked_cases
from .over_limit import over_limit_checks
from .rate_limits import rate_limit_checks
from .report import Check
from .routes import ROUTES, body
from .stack import Stack, Target
from .wire import post, raw_exchange, request_head

MAX_ERROR_BODY = 8192  # an error answer longer than this echoes the input back
# Valid as documented (docs/api.md): OpenAI seeds have no range, chat content may be blank,
# fields OpenAI does not have are ignored on its routes.
MAY_SUCCEED = {"completions:huge-seed", "chat:huge-seed", "completions:negative-seed",
               "chat:negative-seed", "chat:empty-prompt", "chat:whitespace-prompt",
               "completions:unknown-field", "chat:unknown-field", "token-exp-1e300"}


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
            "60kb-token": bearer + "a" * 60_000,
            # The policy claims (docs/proxy.md): malformed makes the token invalid (401); a
            # model not allowed, or no model at all, is refused (403) before the API.
            "models-string": bearer + stack.token(models="*"),
            "models-number": bearer + stack.token(models=[1]),
            "models-empty-name": bearer + stack.token(models=[""]),
            "models-101-names": bearer + stack.token(models=["m"] * 101),
            "models-other": bearer + stack.token(models=["not-this-model-*"]),
            "models-none": bearer + stack.token(models=[]),
            "rpm-negative": bearer + stack.token(rpm=-1),
            "rpm-string": bearer + stack.token(rpm="60"),
            "rpm-true": bearer + stack.token(rpm=True),
            "rpm-10e30": bearer + stack.token(rpm=10**30),
            "tpm-fraction": bearer + stack.token(tpm=1.5),
            "tpm-1e300": bearer + stack.token(tpm=1e300),
            "tpm-object": bearer + stack.token(tpm={"n": 1})}


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
    return checks + over_limit_checks(stack) + rate_limit_checks(stack)
