"""The stack under soak, started here on free loopback ports, and the ways to hurt it.

Two forms. "single": the proxy in front of one API server (as `make run`). "edge": the nginx edge
(deploy/nginx) in front of the proxy, and the edge's internal side in front of two API replicas,
as the compose file deploys them; there a replica can be restarted while the other serves.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import psutil

from hostile.stack import BIN, REPO, free_port, get_health, spawn, wait_until
from render_nginx import render, server_lines

# Debian puts nginx in /usr/sbin, which is not on every user's PATH.
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


@dataclass
class Server:
    """One server process (gunicorn or nginx) that can be stopped and started again."""

    name: str
    argv: list[str]
    env: dict
    health_url: str
    proc: subprocess.Popen | None = None
    logs: list[str] = field(default_factory=list)  # one log file per start

    @property
    def url(self) -> str:
        return self.health_url.removesuffix("/health")

    def start(self) -> None:
        self.proc = spawn(self.argv, self.env)
        self.logs.append(self.proc.log_path)

    def ready(self) -> bool:
        return get_health(self.url)[0] == 200

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds until healthy; None if it did not get there, or exited."""
        waited = wait_until(lambda: self.proc.poll() is not None or self.ready(), timeout, 0.05)
        return None if waited is None or self.proc.poll() is not None else waited

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, then SIGKILL of its process group if it lingers; seconds until it exited."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return time.monotonic() - started

    def output(self) -> str:
        return "".join(Path(log).read_text(errors="replace") for log in self.logs)


@dataclass
class SoakStack:
    """The servers, the URL clients use, and the secret the proxy checks tokens with."""

    form: str
    mock: bool
    secret: str
    client_url: str
    apis: list[Server]
    proxy: Server
    edge: Server | None = None
    workdir: str = ""

    def token(self, client: str, **claims) -> str:
        return jwt.encode({"team_id": "soak", "token_id": client, **claims}, self.secret,
                          algorithm="HS256")

    def servers(self) -> list[Server]:
        return [*self.apis, self.proxy, *([self.edge] if self.edge else [])]

    def backend(self, api: Server) -> psutil.Process | None:
        """The decode-backend process of an API server (the worker's spawned child)."""
        try:
            children = psutil.Process(api.proc.pid).children(recursive=True)
        except psutil.Error:
            return None
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(
                        child.cmdline()):
                    return child
            except psutil.Error:
                continue
        return None

    def processes(self) -> dict[str, psutil.Process]:
        """Each role's process now: API workers, their backends, the proxy's worker."""
        found = {}
        for api in self.apis:
            for child in _children(api.proc.pid, recursive=True):
                cmdline = _cmdline(child)
                if "resource_tracker" in cmdline:
                    continue  # multiprocessing's helper beside the backend
                role = "backend" if "spawn_main" in cmdline else "worker"
                found[f"{api.name} {role}"] = child
        for child in _children(self.proxy.proc.pid):
            found[f"{self.proxy.name} worker"] = child
        return found

    def stop(self) -> None:
        for server in reversed(self.servers()):
            server.stop(40)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _children(pid: int, recursive: bool = False) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=recursive)
    except psutil.Error:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.Error:
            continue
    return alive


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def api_server(name: str, env: dict) -> Server:
    port = free_port()
    return Server(name, [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"],
                  {**env, "SERVICE_PORT": str(port)}, f"http://127.0.0.1:{port}/health")


def start_stack(form: str, model: str, api_env: dict, start_timeout: float) -> SoakStack:
    """Start every server of the form and wait until each is healthy."""
    if form == "edge" and NGINX is None:
        raise RuntimeError("the edge form needs nginx (apt-get install nginx-light)")
    secret = secrets.token_urlsafe(32)
    env = dict(os.environ, HF_HUB_OFFLINE="1", JWT_SECRET=secret, MOCK_MODEL=str(
        int(model == "mock")), **api_env)
    apis = [api_server(f"api-{i + 1}", env) for i in range(2 if form == "edge" else 1)]
    proxy_port = free_port()
    workdir = tempfile.mkdtemp(prefix="soak-")
    Path(workdir).chmod(0o755)  # nginx keeps large bodies there, and its workers may be nobody
    edge = None
    if form == "edge":
        public, internal = free_port(), free_port()
        upstream = f"http://127.0.0.1:{internal}"
        edge = _edge(workdir, public, internal, proxy_port, apis)
        client_url = f"http://127.0.0.1:{public}"
    else:
        upstream, client_url = apis[0].url, f"http://127.0.0.1:{proxy_port}"
    proxy = Server("proxy", [str(BIN / "gunicorn"), "--config", "proxy/gunicorn.conf.py"],
                   {**env, "UPSTREAM_URL": upstream, "PROXY_HOST": "127.0.0.1",
                    "PROXY_PORT": str(proxy_port), "PROXY_METRICS_PORT": str(free_port())},
                   f"http://127.0.0.1:{proxy_port}/health")
    stack = SoakStack(form, model == "mock", secret, client_url, apis, proxy, edge, workdir)
    try:
        for server in stack.servers():
            server.start()
        for server in stack.servers():
            if server.wait_ready(start_timeout) is None:
                raise RuntimeError(f"{server.name} did not get ready:\n{server.output()[-3000:]}")
    except BaseException:
        stack.stop()
        raise
    return stack


def _edge(workdir: str, public: int, internal: int, proxy_port: int, apis: list[Server]) -> Server:
    """nginx with the deployed template, in front of the proxy and the API replicas."""
    replicas = [api.url.removeprefix("http://") for api in apis]
    prefix = Path(workdir) / "nginx"
    prefix.mkdir()
    prefix.chmod(0o755)  # under root nginx's workers run as nobody
    conf = prefix / "nginx.conf"
    conf.write_text(render({"PUBLIC_PORT": f"127.0.0.1:{public}",
                            "PROXY_UPSTREAM": f"127.0.0.1:{proxy_port}",
                            "INTERNAL_PORT": f"127.0.0.1:{internal}",
                            "API_UPSTREAM_SERVERS": server_lines(replicas)}))
    # The public side's /health goes through the proxy to a replica: ready when all three are.
    return Server("edge", [NGINX, "-p", str(prefix), "-c", str(conf), "-e", "stderr"], {},
                  f"http://127.0.0.1:{public}/health")


__all__ = ["REPO", "Server", "SoakStack", "start_stack"]
