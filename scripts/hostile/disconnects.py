"""Section 3: clients that leave mid-generation, and how long until their rows are free."""
from __future__ import annotations

import socket
import statistics
import time

from .report import Check
from .routes import ROUTES, long_body
from .stack import Stack, Target, get_health, idle, wait_until
from .wire import open_request


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
    socks = [open_request(target, path, long_body(route, stack.model, args, stream))
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
