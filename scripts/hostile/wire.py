"""HTTP for the attacks: requests, or raw bytes where the bytes on the wire are the point."""
from __future__ import annotations

import http.client
import json
import select
import socket
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from .stack import Target


def hostport(url: str) -> tuple[str, int]:
    """(host, port) of an http URL."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or 80


def request_head(url: str, method: str, path: str, headers: dict) -> bytes:
    """A request line and headers, with Connection: close."""
    lines = [f"{method} {path} HTTP/1.1", "Host: {}:{}".format(*hostport(url)),
             *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw_exchange(url: str, head: bytes, parts=()) -> tuple:
    """Send head and body parts, stopping when an answer comes; (status, headers, body)."""
    with socket.create_connection(hostport(url), timeout=30) as sock:
        try:
            sock.sendall(head)
            for part in parts:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(part)
        except OSError:
            pass
        answer = http.client.HTTPResponse(sock)
        try:
            answer.begin()
        except (http.client.HTTPException, OSError):
            return None, {}, b""
        try:
            data = answer.read(4 << 20)
        except (http.client.HTTPException, OSError) as exc:
            data = getattr(exc, "partial", b"")
        return answer.status, CaseInsensitiveDict(answer.getheaders()), data


def post(target: Target, path: str, data: bytes, headers: dict, with_token: bool = True) -> tuple:
    """POST body bytes; (status, headers, body of an error); status None if dropped."""
    headers = {"Content-Type": "application/json", **(target.headers if with_token else {}),
               **headers}
    try:
        with requests.post(target.url + path, data=data, headers=headers, stream=True,
                           timeout=30) as response:
            error = response.content if response.status_code >= 300 else b""
            return response.status_code, response.headers, error
    except requests.RequestException:
        return None, {}, b""


def open_request(target: Target, path: str, data: dict) -> socket.socket:
    """A socket with a JSON POST sent on it and its answer unread."""
    payload = json.dumps(data).encode()
    sock = socket.create_connection(hostport(target.url), timeout=15)
    headers = {**target.headers, "Content-Type": "application/json", "Content-Length": len(payload)}
    sock.sendall(request_head(target.url, "POST", path, headers) + payload)
    return sock


def open_stream(target: Target, path: str, data: dict) -> tuple:
    """A streamed POST read to its first chunk; (response, its chunk iterator, bytes so far)."""
    response = requests.post(target.url + path, headers=target.headers, json=data,
                             stream=True, timeout=(5, 45))
    chunks = response.iter_content(None)  # kept: dropping it would close the connection
    return response, chunks, next(chunks, b"")


def read_rest(response, chunks, seen: bytes) -> tuple[bytes, Exception | None]:
    """A stream from open_stream read to its end and closed; (its bytes, what cut it)."""
    try:
        return seen + b"".join(chunks), None
    except requests.RequestException as exc:
        return seen, exc
    finally:
        response.close()
