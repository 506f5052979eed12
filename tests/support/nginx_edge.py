"""The nginx edge (deploy/nginx/nginx.conf.template) as a real process, and stand-in replicas
that fail in the ways the edge must handle: always 503, or a stream cut after its first chunk.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from helpers import api_server, wait_for
from net import SocketServer, free_port, port_open, read_request
from render_nginx import render, server_lines
from soaking.stack import NGINX

NO_NGINX = "nginx is not installed (apt-get install nginx-light): the edge is not tested"


class Edge:
    """nginx running the rendered template on loopback, in a prefix folder of its own."""

    def __init__(self, api_servers: str, proxy_upstream: str | None = None):
        self.public_port, self.internal_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.public_port}"
        self.internal_url = f"http://127.0.0.1:{self.internal_port}"
        # Nothing listens there: tests of the internal server alone never reach it.
        self.proxy_upstream = proxy_upstream or f"127.0.0.1:{free_port()}"
        self.api_servers = api_servers
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-edge-"))
        # Under root, nginx's workers run as nobody and keep large bodies in the prefix.
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.log_path = self.prefix / "output.log"
        self.proc: subprocess.Popen | None = None

    def render(self) -> str:
        return render({"PUBLIC_PORT": f"127.0.0.1:{self.public_port}",
                       "PROXY_UPSTREAM": self.proxy_upstream,
                       "INTERNAL_PORT": f"127.0.0.1:{self.internal_port}",
                       "API_UPSTREAM_SERVERS": self.api_servers})

    def argv(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr", *extra]

    def start(self) -> "Edge":
        self.conf.write_text(self.render())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        up = wait_for(lambda: self.proc.poll() is not None
                      or (port_open(self.public_port) and port_open(self.internal_port)),
                      timeout=15)
        if not up or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.output()}")
        return self

    def output(self) -> str:
        """nginx's error log and access log (both go to its stdout/stderr)."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are closed
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> "Edge":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class StubReplica(SocketServer):
    """A TCP server that reads each request whole and answers as `mode` says:

    - "503": the API's "not ready" answer (as loading or draining replicas give);
    - "cut": a streamed 200 whose first chunk is sent, then the connection is dropped;
    - "close": the connection is closed before anything is sent back.
    `requests` counts the requests that arrived whole.
    """

    BODY_503 = b'{"status_code": 503, "message": "the model is loading"}'
    ANSWER_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                  b"Retry-After: 5\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY_503), BODY_503))
    FIRST_CHUNK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n")

    def __init__(self, mode: str):
        assert mode in ("503", "cut", "close")
        self.mode = mode
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while read_request(conn) is not None:
                    with self._lock:
                        self.requests += 1
                    if self.mode != "503":
                        if self.mode == "cut":
                            conn.sendall(self.FIRST_CHUNK)
                        return
                    conn.sendall(self.ANSWER_503)
            except OSError:
                pass


__all__ = ["NGINX", "NO_NGINX", "Edge", "StubReplica", "server_lines"]


@contextmanager
def mock_replicas(count: int, env: dict):
    """count mock API servers with env, started together and stopped at the end."""
    servers = [api_server(env) for _ in range(count)]
    try:
        for server in servers:
            server.start(wait_ready=False)
        for server in servers:
            server.wait_healthy(60)
        yield servers
    finally:
        for server in servers:
            server.stop()
