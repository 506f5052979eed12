"""Section 1, through the proxy: a burst from a token whose `rpm` claim allows a few requests,
beside another token. The burst gets the allowed answers whole and 429s with `Retry-After` for
the rest; the other token is not slowed or refused (docs/proxy.md, "Rate limits")."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from .report import Check
from .routes import ROUTES, body
from .stack import Stack

ALLOWED = 3
BURST = 20


def rate_limit_checks(stack: Stack) -> list[Check]:
    """The burst over a token's rpm claim, and a bystander token meanwhile."""
    path = stack.proxy_url + ROUTES["chat"][0]
    data = body("chat", stack.model)
    # A fresh token id: a rerun against a running proxy starts with a window of its own.
    limited = stack.token(token_id=f"rate-{uuid.uuid4().hex[:8]}", rpm=ALLOWED)
    bystander = stack.token(token_id=f"bystander-{uuid.uuid4().hex[:8]}")

    def send(token: str):
        try:
            return requests.post(path, data=data, timeout=60, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        except requests.RequestException as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(send, [limited] * BURST))
        beside = list(pool.map(send, [bystander] * 5))
    check = Check("1 bad inputs", "proxy burst over a token's rpm claim")
    statuses = [getattr(r, "status_code", None) for r in burst]
    check.figures = dict(sent=BURST, answered_200=statuses.count(200),
                         answered_429=statuses.count(429),
                         bystander_200=sum(getattr(r, "status_code", 0) == 200 for r in beside))
    if statuses.count(200) > ALLOWED:
        check.failures.append(f"{statuses.count(200)} answered 200, the claim allows {ALLOWED}")
    for answer in burst:
        status = getattr(answer, "status_code", None)
        if status == 429 and not answer.headers.get("Retry-After", "").isdigit():
            check.failures.append("a 429 without a Retry-After in seconds")
        elif status == 429 and "error" not in answer.json():
            check.failures.append(f"a 429 not in OpenAI's shape: {answer.content[:100]!r}")
        elif status not in (200, 429):
            check.failures.append(f"burst answered {status}: {str(answer)[:100]}")
    if check.figures["bystander_200"] != len(beside):
        check.failures.append("the other token was refused or failed during the burst")
    return [check]
