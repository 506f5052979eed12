"""Section 2: idle and slowloris sockets on the proxy while a normal stream is timed."""
from __future__ import annotations

import socket
import statistics
import threading
import time

import requests

from .report import Check
from .stack import Stack
from .wire import hostport


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



def socket_gone(sock: socket.socket, line: bytes = b"") -> bool:
    """Whether the server closed or answered a non-blocking socket, after sending it `line`."""
    try:
        if line:
            sock.send(line)
        return sock.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:  # nothing to read, or no room to send: still open
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
            line = f"X-Slow-{int(time.monotonic())}: x\r\n".encode() if send and i % 2 else b""
            if socket_gone(sock, line):
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
