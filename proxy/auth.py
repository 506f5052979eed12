"""Bearer token checks shared by the proxy and scripts/jwt_util.py: HS256 JWTs only."""
from __future__ import annotations

import re
import warnings

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("team_id", "token_id")
LEEWAY_S = 10  # tolerated clock skew between the token issuer and the proxy, for exp/nbf/iat
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


def verify_token(token: str, secret: str) -> dict:
    """The claims of a valid token; raises AuthError saying why it is not valid."""
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
    for name in REQUIRED_CLAIMS:
        value = claims[name]
        if isinstance(value, int) and not isinstance(value, bool):
            value = claims[name] = str(value)
        if not isinstance(value, str) or not _CLAIM_VALUE.fullmatch(value):
            raise AuthError("bad_claim", f"token claim {name} must be 1-256 visible ASCII characters")
    return claims
