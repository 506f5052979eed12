"""Values quoted in error messages: a short prefix, never the whole of what a client sent."""
from __future__ import annotations

import reprlib

MAX_QUOTE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 40, 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlong = 40


def quote(value, limit: int = MAX_QUOTE_CHARS) -> str:
    """repr(value) cut to about `limit` characters, saying how long the value was when cut."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        # reprlib bounds depth and width: a deep or huge value costs no more than a small one.
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long for str(); any value must be quotable
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(value, (list, tuple, dict)) and len(value) > _repr.maxlist:
        text += f" ({len(value)} items)"
    return text


def quote_name(name: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """A field name or path as sent, cut like a value (unquoted when short)."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def one_line(message: str, limit: int = 300) -> str:
    """A library's message on one line and cut to `limit` characters (llguidance's messages can
    quote a whole grammar)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit - 3] + "..."
