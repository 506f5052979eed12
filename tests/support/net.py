"""Loopback sockets: free ports, whether a port listens, raw HTTP/1.1 requests sent byte for byte
and their answers read back, and SocketServer, the base of the stand-ins that answer exactly as
a test tells them (stub_upstream.RawUpstream, nginx_edge.StubReplica)."""
from __future__ import annotations

import http.client
import socket
import threading
import time

import requests

HOST = "127.0.0.1"


# --- ports ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A new connection to 127.0.0.1:port (a context manager that closes it)."""
    return socket.create_connection((HOST, port), timeout=timeout)


# --- raw HTTP/1.1 -----------------------------------------------------------------------------


def read_until(sock: socket.socket, done, received: bytes = b"") -> bytes | None:
    """Receive onto received until done(received) holds; None if the peer closes first."""
    while not done(received):
        data = sock.recv(65536)
        if not data:
            return None
        received += data
    return received


def head_received(received: bytes) -> bool:
    """Whether received holds the whole head of a request or an answer."""
    return b"\r\n\r\n" in received


def _headers(head: bytes) -> dict:
    """The header lines of a head (after its first line), names lower-cased."""
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def parse_answer(raw: bytes) -> tuple[int, dict, bytes]:
    """Status, headers (names lower-cased) and body of one HTTP/1.x answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b"\r\n", 1)[0].split()[1]), _headers(head), body


def answer_complete(received: bytes) -> bool:
    """Whether received holds a whole answer with a Content-Length."""
    head, found, body = received.partition(b"\r\n\r\n")
    length = _headers(head).get("content-length") if found else None
    return length is not None and len(body) >= int(length)


def as_response(raw: bytes) -> requests.Response:
    """One HTTP/1.1 answer's bytes as a requests.Response."""
    status, headers, body = parse_answer(raw)
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    response._content = body
    return response


def exchange(port: int, *parts: bytes, pause: float = 0.0, timeout: float = 20.0) -> bytes:
    """Send parts as they are (pausing between them) on a new connection; read until the answer
    is whole (by its Content-Length) or the connection closes."""
    with connect(port, timeout=timeout) as sock:
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:
                break  # the server answered and closed before reading everything: fine
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                return received
            received += data
            if answer_complete(received):
                return received
    return received


def raw_request(port: int, data: bytes, end: bool = False) -> tuple[int, dict, bytes]:
    """Send data as it is (a malformed chunked body, say); status, headers and body back, the
    answer read by http.client (so a chunked answer too).

    end=True closes the sending side after the data, as a client that gave up would.
    """
    sock = connect(port, timeout=30)
    try:
        try:
            sock.sendall(data)
            if end:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything: its answer is still there
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        sock.close()


def read_request(conn: socket.socket) -> bytes | None:
    """One request read whole (its head and its Content-Length body); None if the stream ends
    first."""
    received = read_until(conn, head_received)
    if received is None:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(_headers(head).get("content-length", 0))
    body = read_until(conn, lambda got: len(got) >= length, body)
    return None if body is None else head + b"\r\n\r\n" + body


# --- stand-in servers -------------------------------------------------------------------------


class SocketServer:
    """A TCP server on 127.0.0.1 that serves each connection in a thread of its own; subclasses
    say how (serve), and set what serve reads before calling this __init__. `connections` counts
    the connections accepted; closing the server closes them too."""

    def __init__(self):
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self.url = f"http://{self.address}"
        self.connections = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._server.close()
        for conn in self._conns:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
