"""The optional policy claims of a token: `models` (which models it may use), `rpm` and `tpm`
(its own rate limits). A malformed policy claim makes the whole token invalid (401): ignoring
it would give the token more than its issuer meant it to have."""
from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

MAX_MODEL_PATTERNS = 100
# Far above any real limit; keeps absurd numbers (1e300, 10**400) out of the arithmetic.
MAX_RATE = 10**9
# A model name or an fnmatch pattern: visible ASCII, as the claims that become headers.
_PATTERN = re.compile(r"[\x21-\x7e]{1,256}")


class ClaimError(ValueError):
    """A policy claim is present but malformed; the message names it and is safe to show."""


@dataclass(frozen=True)
class TokenPolicy:
    """What one token may do: models None = any model; rpm/tpm None = the proxy's settings."""

    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None

    def allows(self, model: str) -> bool:
        """Whether the token may use model (patterns match case-sensitively, fnmatch-style)."""
        if self.models is None:
            return True
        return any(fnmatchcase(model, pattern) for pattern in self.models)


def policy_of(claims: dict) -> TokenPolicy:
    """The policy that a token's verified claims set; ClaimError if one of them is malformed."""
    return TokenPolicy(models=_models(claims.get("models")), rpm=_rate(claims, "rpm"),
                       tpm=_rate(claims, "tpm"))


def _models(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_MODEL_PATTERNS:
        raise ClaimError(f"token claim models must be a list of at most {MAX_MODEL_PATTERNS} "
                         "model names or patterns")
    for item in value:
        if not isinstance(item, str) or not _PATTERN.fullmatch(item):
            raise ClaimError("token claim models must hold names or patterns of 1-256 visible "
                             "ASCII characters")
    return tuple(value)


def _rate(claims: dict, name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; 60.0 from a JSON encoder is a whole number and accepted.
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_RATE:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RATE:
        raise ClaimError(f"token claim {name} must be a whole number from 0 (no limit) "
                         f"to {MAX_RATE}")
    return value
