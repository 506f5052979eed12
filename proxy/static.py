"""The chat page: the files of proxy/static/, served at / and /static/ without a token."""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp import web

from .errors import RequestError

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = "index.html"
PREFIX = "/static/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page runs only its own files and talks only to its own origin: an injected script
# could otherwise read the token kept in local storage and send it elsewhere.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "connect-src 'self'", "script-src 'self'", "style-src 'self'",
    "img-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (a 304 when unchanged), so an upgraded server never mixes old
    # and new modules of the page.
    "Cache-Control": "no-cache",
}


def is_static_path(path: str) -> bool:
    """Whether the proxy answers path itself from the page's files (no token, no upstream)."""
    return path == "/" or path.startswith(PREFIX)


def public_files(folder: Path = STATIC_DIR) -> dict[str, Path]:
    """URL path -> file, for the files directly in folder whose type is known."""
    # Listed once at start: a request only ever picks from this map, never builds a file
    # path from its own bytes, so no spelling of '..' or '/' can reach another file.
    files = {PREFIX + p.name: p for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix in CONTENT_TYPES} if folder.is_dir() else {}
    if PREFIX + PAGE in files:
        files["/"] = files[PREFIX + PAGE]
    return files


class StaticFiles:
    """Answers GET and HEAD for the page's files; anything else under /static/ is a 404."""

    def __init__(self, folder: Path = STATIC_DIR):
        self.files = public_files(folder)

    async def answer(self, request: web.BaseRequest, path: str) -> web.Response:
        """The file at path with its headers, a 304 when the client's copy is current, or an error."""
        file = self.files.get(path)
        if file is None:
            raise RequestError(404, "no such file", "not_found")
        if request.method not in ("GET", "HEAD"):
            raise RequestError(405, "the page's files answer GET and HEAD only", "bad_method",
                               headers={"Allow": "GET, HEAD"})
        try:
            # Read per request, so edits to the page show on reload during development.
            body = await asyncio.get_running_loop().run_in_executor(None, file.read_bytes)
        except OSError:
            raise RequestError(404, "no such file", "not_found") from None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {**SECURITY_HEADERS, "ETag": etag}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers,
                                                "Content-Type": CONTENT_TYPES[file.suffix]})
