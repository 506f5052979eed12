"""Bearer token checks shared by the proxy and scripts/jwt_util.py: HS256 JWTs only."""
from __future__ import annotations

import re
import time
import warnings

import jwt

from .claims import ClaimError, policy_of

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("team_id", "token_id")
LEEWAY_S = 10  # tolerated clock skew between the token issuer and the proxy, for exp/nbf/iat
# The end of year 9999: an exp beyond it is a mistake or a token meant never to expire.
MAX_EXP = 253402300799
# Claims become upstream headers and log fields: keep them to short visible ASCII.
_CLAIM_VALUE = re.compile(r"[\x21-\x7e]{1,256}")

# The short-secret warning is given once at start; PyJWT would repeat it on every token.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


class AuthError(Exception):
    """A request or token is refused; reason is a short metric label, message is safe to show."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def token_from_header(value: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not value or not value.strip():
        raise AuthError("missing_header",
                        "missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("bad_scheme", "Authorization scheme must be Bearer")
    token = token.strip()
    if not token or " " in token:
        raise AuthError("malformed", "Authorization header must be 'Bearer <token>' with one token")
    return token


def token_of_request(authorization: str | None, api_key: str | None, anthropic: bool) -> str:
    """The token a request carries: in `Authorization: Bearer`, or, on Anthropic's Messages
    API (whose clients send their key so), in `x-api-key` when there is no Authorization."""
    if anthropic and api_key is not None and not (authorization or "").strip():
        token = api_key.strip()
        if not token or " " in token:
            raise AuthError("malformed", "the x-api-key header must hold one token")
        return token
    return token_from_header(authorization)


def verify_token(token: str, secret: str, max_lifetime_s: int = 0) -> dict:
    """The claims of a valid token; raises AuthError saying why it is not valid.

    max_lifetime_s > 0 also refuses tokens without exp or whose exp is further away than that.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthError("malformed", "token is not a well-formed JWT") from None
    # Checked before decoding so that 'none' and other algorithms get a clear answer.
    if header.get("alg") != ALGORITHM:
        raise AuthError("bad_algorithm", f"token algorithm must be {ALGORITHM}")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            options={"require": list(REQUIRED_CLAIMS)})
    except jwt.ExpiredSignatureError:
        raise AuthError("expired", "token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("not_yet_valid", "token is not yet valid (nbf or iat in the future)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature", "token signature is invalid") from None
    except jwt.MissingRequiredClaimError as err:
        raise AuthError("missing_claim", f"token is missing the {err.claim} claim") from None
    except jwt.InvalidTokenError as err:
        # PyJWT's remaining messages name the problem (e.g. a non-integer exp), never the token.
        raise AuthError("invalid", f"token is invalid: {err}") from None
    _check_lifetime(claims, max_lifetime_s)
    for name in REQUIRED_CLAIMS:
        value = claims[name]
        if isinstance(value, int) and not isinstance(value, bool):
            value = claims[name] = str(value)
        if not isinstance(value, str) or not _CLAIM_VALUE.fullmatch(value):
            raise AuthError("bad_claim", f"token claim {name} must be 1-256 visible ASCII characters")
    try:
        policy_of(claims)  # models, rpm, tpm: optional, but never malformed
    except ClaimError as err:
        raise AuthError("bad_claim", str(err)) from None
    return claims


def _check_lifetime(claims: dict, max_lifetime_s: int) -> None:
    """Refuse an exp that is absurd, or further away than the configured lifetime allows."""
    exp = claims.get("exp")
    if exp is None:
        if max_lifetime_s:
            raise AuthError("lifetime", "token has no exp claim; this proxy requires tokens "
                            f"that expire within {max_lifetime_s} s")
        return
    # PyJWT accepted int(exp): exp is a finite number, but it may be 1e300 or 10**400
    # (compared exactly, never converted, so no size can overflow here).
    if exp > MAX_EXP:
        raise AuthError("lifetime", "token exp claim is not a time before the year 10000")
    if max_lifetime_s and exp > time.time() + max_lifetime_s + LEEWAY_S:
        raise AuthError("lifetime", f"token expires too late: this proxy accepts tokens "
                        f"that expire within {max_lifetime_s} s")
