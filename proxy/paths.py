"""Which request targets the proxy forwards: origin-form paths with no dot segments."""
from __future__ import annotations

import re

# A dot segment, raw or percent-encoded (%2e, either case), that an HTTP library, the API's
# router or a later hop could resolve, reaching a path the proxy never saw (e.g. /metrics).
_DOT_SEGMENT = re.compile(r"(?:\.|%2e){1,2}", re.IGNORECASE)
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*")
# Encoded slashes and backslashes let one hop see one segment where the next sees several.
_AMBIGUOUS = re.compile(r"%2f|%5c|\\", re.IGNORECASE)


def target_problem(target: str) -> str | None:
    """Why the request target must be refused, or None if it can be forwarded as sent."""
    # Origin-form only: absolute-form (http://host/...), authority-form (CONNECT) and `*`
    # name something other than a path on the API.
    if not target.startswith("/") or target.startswith("//"):
        return "the request target must be a path starting with a single '/'"
    if not _VISIBLE_ASCII.fullmatch(target):
        return "the request target must be visible ASCII (percent-encode anything else)"
    if "#" in target:
        return "the request target must not contain a fragment ('#')"
    path = target.split("?", 1)[0]
    if any(_DOT_SEGMENT.fullmatch(segment) for segment in path.split("/")):
        return "the path must not contain '.' or '..' segments"
    if _AMBIGUOUS.search(path):
        return "the path must not contain encoded slashes (%2F, %5C) or backslashes"
    return None
