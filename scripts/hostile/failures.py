"""Sections 4 and 5: the backend killed mid-stream, and the API told to stop (SIGTERM)."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests

from .report import Check
from .routes import ROUTES, long_body
from .stack import Stack, get_health, wait_until
from .wire import open_stream, read_rest


def backend_process(api_pid: int) -> psutil.Process | None:
    """The decode backend: the gunicorn worker's child that is not a resource tracker."""
    for worker in psutil.Process(api_pid).children():
        for child in worker.children():
            if "resource_tracker" not in " ".join(child.cmdline()):
                return child
    return None


def finish_stream(route: str, response, chunks, seen: bytes) -> str:
    """Read a stream whose backend died to its end; empty if the client could tell."""
    seen, error = read_rest(response, chunks, seen)
    if error is not None and "timed out" in str(error):
        return "no end within the 45 s read timeout"
    cut = error is not None
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
                                                 long_body(route, stack.model, args, True)))
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


def probe(method: str, url: str, headers: dict, start: float, data: dict | None = None) -> dict:
    """Status, Retry-After and time since `start` of one request; status None if refused."""
    try:
        response = requests.request(method, url, headers=headers, json=data, timeout=5)
        result = dict(status=response.status_code, retry_after=response.headers.get("Retry-After"))
    except requests.RequestException as exc:
        result = dict(status=None, error=type(exc).__name__)
    return result | dict(at_s=round(time.monotonic() - start, 2))


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
    for target, stream, (health, new) in zip(stack.targets(), streams, probes):
        seen, error = read_rest(*stream)
        finished = True if error is None else f"cut ({type(error).__name__})"
        if finished is True and stack.mock:
            from inference_api.mock.text import mock_answer
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
