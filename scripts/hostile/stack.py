"""The servers under attack: started here on free loopback ports, or found running."""
from __future__ import annotations

import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import requests

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


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


def open_stack(args) -> Stack:
    """The stack named by --api-url and friends, or a new one started here."""
    if not args.api_url:
        return start_stack(args)
    return Stack(args.api_url.rstrip("/"), args.proxy_url.rstrip("/"),
                 args.secret or os.environ["JWT_SECRET"], args.api_pid,
                 os.environ.get("PROXY_HEADER_TIMEOUT", ""), mock=args.model == "mock")


def start_stack(args) -> Stack:
    """The API under gunicorn and the proxy in front of it, on free loopback ports."""
    api_port, proxy_port = free_port(), free_port()
    stack = Stack(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}",
                  secrets.token_urlsafe(32), mock=args.model == "mock")
    env = dict(os.environ, SERVICE_PORT=str(api_port), MOCK_MODEL=str(int(stack.mock)),
               MOCK_STEP_MS=str(args.mock_step_ms), JWT_SECRET=stack.secret,
               UPSTREAM_URL=stack.api_url, PROXY_HOST="127.0.0.1", PROXY_PORT=str(proxy_port),
               PROXY_METRICS_PORT=str(free_port()))
    # An older proxy has no such setting; section 2 then holds it to no header timeout.
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
