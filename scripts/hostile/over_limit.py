"""Section 1, last check: a client sending bodies over the limits beside one sending normal
requests. The refused bodies may be left unread on a connection; no normal request, the
sender's own or the other client's, may fail for it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from .report import Check
from .routes import ROUTES, body
from .stack import Stack, Target

# Bodies over a limit, by target: 2 MiB is over the API's MAX_BODY_BYTES (1 MiB by default) and
# within the 8 MiB it reads before its 413 (docs/api.md) and the proxy's 8 MiB, so the API
# refuses it; 9 MiB is over the proxy's limit, so the proxy refuses it (and closes that client's
# connection, as docs/proxy.md says). The API promises nothing of a connection past 8 MiB.
OVER_LIMIT_SIZES = {"direct": (2 << 20,), "proxy": (2 << 20, 9 << 20)}
ROUNDS = 20  # over-limit bodies sent, each followed by NORMAL_AFTER normal requests
NORMAL_AFTER = 2
BESIDE = 60  # normal requests from the other client meanwhile


class Client:
    """One kept-alive client and what its requests got."""

    def __init__(self, target: Target, headers: dict, path: str, valid: bytes):
        self.session = requests.Session()
        self.session.headers.update({**headers, "Content-Type": "application/json"})
        self.url, self.valid = target.url + path, valid
        self.normal = self.over_limit = self.refused = 0
        self.failures: list[str] = []

    def send_normal(self, who: str) -> None:
        """A valid request, which must be answered 200."""
        self.normal += 1
        try:
            response = self.session.post(self.url, data=self.valid, timeout=60)
        except requests.RequestException as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:100]}"
        else:
            if response.status_code == 200:
                return
            problem = f"{response.status_code} {response.content[:100]!r}"
        self.failures.append(f"{who} normal request {self.normal}: {problem}")

    def send_over_limit(self, size: int) -> None:
        """A body over a limit: 413 or a dropped connection are both fine for its sender."""
        self.over_limit += 1
        try:
            response = self.session.post(self.url, data=b" " * size, timeout=60)
            self.refused += response.status_code == 413
        except requests.RequestException:
            pass


def over_limit_round(stack: Stack, target: Target) -> Check:
    """Over-limit bodies from one client, normal requests from it and from another."""
    path, valid = ROUTES["inference"][0].format(model=stack.model), body("inference", stack.model)

    def client(name: str) -> Client:
        token = {"Authorization": f"Bearer {stack.token(token_id=name)}"}
        return Client(target, token if target.name == "proxy" else {}, path, valid)

    sender, bystander = client("over-limit-sender"), client("bystander")
    sizes = OVER_LIMIT_SIZES[target.name]

    def attack() -> None:
        for index in range(ROUNDS):
            sender.send_over_limit(sizes[index % len(sizes)])
            for _ in range(NORMAL_AFTER):
                sender.send_normal("sender's")

    def normal_use() -> None:
        for _ in range(BESIDE):
            bystander.send_normal("bystander's")

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(attack), pool.submit(normal_use)]:
            future.result()
    sender.session.close()
    bystander.session.close()
    check = Check("1 bad inputs", f"{target.name} over-limit bodies beside normal requests")
    check.figures = dict(over_limit_sent=sender.over_limit, answered_413=sender.refused,
                         normal_sent=sender.normal + bystander.normal,
                         normal_failed=len(sender.failures) + len(bystander.failures))
    check.failures = sender.failures + bystander.failures
    return check


def over_limit_checks(stack: Stack) -> list[Check]:
    """The over-limit round on each target, the API directly and through the proxy."""
    return [over_limit_round(stack, target) for target in stack.targets()]
