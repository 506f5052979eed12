"""Errors the proxy makes itself, all in the API's JSON shape."""
from __future__ import annotations

import json

from aiohttp import web


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    """`{"status_code": N, "message": "..."}` with status N."""
    body = json.dumps({"status_code": status, "message": message}).encode()
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)
