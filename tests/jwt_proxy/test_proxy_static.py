"""The chat page's files, served by the proxy without a token: types, headers, and no way out."""
from __future__ import annotations

import http.client

import pytest
import requests

from helpers import bearer, make_token, start_proxy
from proxy.static import CONTENT_TYPES, STATIC_DIR, public_files

ASSETS = {"/static/chat.js": "text/javascript; charset=utf-8",
          "/static/api.js": "text/javascript; charset=utf-8",
          "/static/sse.js": "text/javascript; charset=utf-8",
          "/static/store.js": "text/javascript; charset=utf-8",
          "/static/solve.js": "text/javascript; charset=utf-8",
          "/static/messages.js": "text/javascript; charset=utf-8",
          "/static/chat.css": "text/css; charset=utf-8",
          "/static/favicon.svg": "image/svg+xml"}
# Raw targets, sent as written (no client normalises them), that try to leave the folder.
STATIC_ESCAPES = [
    "/static/../app.py", "/static/../../pyproject.toml", "/static/%2e%2e/app.py",
    "/static/%2E%2E/%2e%2e/pyproject.toml", "/static/..%2fapp.py", "/static/..%2Fstatic.py",
    "/static/%2e%2e%2fapp.py", "/static/..%5capp.py", "/static/..\\app.py",
    "/static/./chat.js", "/static//chat.js", "/static/chat.js/", "/static/chat.js%00",
    "/static/%63hat.js", "/static/", "/static/static.py", "/static/__init__.py",
    "/static/index.html/../../app.py",
]
ROOT_ESCAPES = ["/../proxy/app.py", "/%2e%2e/proxy/app.py", "/..%2fproxy%2fapp.py",
                "/./static/chat.js"]
# Text of files outside the folder: none may ever come back.
OUTSIDE = ("import ", "[build-system]", "def ")


@pytest.fixture(scope="module")
def proxy(mock_server):
    """A proxy in front of the shared mock API."""
    with start_proxy(mock_server.url) as server:
        yield server


def raw_get(proxy, target: str, method: str = "GET", headers: dict | None = None):
    """(status, headers, body) for target sent byte for byte."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def assert_page_headers(headers) -> None:
    """The headers every file of the page carries."""
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["ETag"].startswith('"')


def test_the_page_is_served_at_the_root_without_a_token(proxy):
    response = requests.get(proxy.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_page_headers(response.headers)
    for hook in ("token", "prompt", "send", "stop", "messages"):
        assert f'data-testid="{hook}"' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # nothing fetched from elsewhere
    assert requests.get(proxy.url + "/?from=bookmark", timeout=10).text == response.text


@pytest.mark.parametrize("path, content_type", sorted(ASSETS.items()))
def test_assets_have_their_type_and_headers(proxy, path, content_type):
    response = requests.get(proxy.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert_page_headers(response.headers)
    assert response.content == (STATIC_DIR / path.rsplit("/", 1)[1]).read_bytes()


def test_every_file_of_the_folder_is_covered():
    assert {"/static/" + p.name for p in STATIC_DIR.iterdir() if p.suffix != ".html"} == set(ASSETS)


def test_an_unchanged_file_is_a_304(proxy):
    first = requests.get(proxy.url + "/static/chat.js", timeout=10)
    again = requests.get(proxy.url + "/static/chat.js", timeout=10,
                         headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == first.headers["ETag"]


def test_head_has_the_headers_and_no_body(proxy):
    status, headers, body = raw_get(proxy, "/", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert_page_headers(headers)


def test_other_methods_on_the_page_are_405(proxy):
    response = requests.post(proxy.url + "/", data=b"x", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


def test_api_paths_still_need_the_token(proxy):
    assert requests.get(proxy.url + "/v1/models", timeout=10).status_code == 401
    assert requests.get(proxy.url + "/static", timeout=10).status_code == 401  # not the folder
    response = requests.get(proxy.url + "/v1/models", headers=bearer(make_token()), timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize("target", STATIC_ESCAPES)
def test_no_spelling_under_static_reaches_another_file(proxy, target):
    status, headers, body = raw_get(proxy, target)
    assert status == 404, (target, body)
    assert headers["Content-Type"] == "application/json"
    assert not any(text.encode() in body for text in OUTSIDE), body
    assert b"chat.js" not in body  # no listing


@pytest.mark.parametrize("target", ROOT_ESCAPES)
def test_dot_segments_at_the_root_are_refused_before_the_token(proxy, target):
    status, _, body = raw_get(proxy, target)
    assert status == 400, (target, body)
    assert not any(text.encode() in body for text in OUTSIDE), body


def test_only_known_types_directly_in_the_folder_are_public(tmp_path):
    for name in ("index.html", "a.js", "notes.txt", "Makefile", "sub/b.js"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    files = public_files(tmp_path)
    assert set(files) == {"/", "/static/index.html", "/static/a.js"}
    assert files["/"] == tmp_path / "index.html"
    assert set(CONTENT_TYPES) == {".html", ".js", ".css", ".svg"}
