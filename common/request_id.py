"""The X-Request-ID rule the proxy and the API share: which ids are kept, and new ones."""
from __future__ import annotations

import re
import uuid

# Safe in a log line and a header: no spaces, quotes or control characters, bounded length.
# The proxy and the API apply this one rule, so a request carries one id through both logs.
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:@/+=-]{1,128}"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def request_id_for(header: str | None) -> str:
    """The client's X-Request-ID if it follows the rule, otherwise a new UUID (hex)."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex
