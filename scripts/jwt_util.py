#!/usr/bin/env python3
"""Make and check the proxy's bearer tokens (HS256 JWTs with team_id and token_id)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jwt

from proxy.auth import ALGORITHM, REQUIRED_CLAIMS, AuthError, verify_token
from proxy.claims import ClaimError, policy_of
from proxy.config import MIN_SECRET_BYTES


def encode(secret: str, claims_json: str, expires_in: int | None,
           policy: dict | None = None) -> int:
    """Print a token for the claims (plus policy: models, rpm, tpm); 2 if they are not usable."""
    try:
        claims = json.loads(claims_json)
    except json.JSONDecodeError as exc:
        return _fail(f"claims are not valid JSON: {exc}")
    if not isinstance(claims, dict):
        return _fail("claims must be a JSON object, e.g. '{\"team_id\": \"t\", \"token_id\": \"k\"}'")
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        return _fail(f"claims lack {', '.join(missing)}: the proxy refuses such tokens")
    claims.update(policy or {})
    try:
        policy_of(claims)
    except ClaimError as exc:
        return _fail(f"{exc}: the proxy refuses such tokens")
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    if len(secret.encode()) < MIN_SECRET_BYTES:
        print(f"warning: the secret is shorter than {MIN_SECRET_BYTES} bytes", file=sys.stderr)
    print(jwt.encode(claims, secret, algorithm=ALGORITHM))
    return 0


def decode(secret: str, token: str) -> int:
    """Print the claims of a valid token as JSON; 1 and the reason if it is not valid."""
    try:
        claims = verify_token(token.strip(), secret)
    except AuthError as err:
        print(f"invalid token: {err.message}", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2, sort_keys=True))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def main(argv=None) -> int:
    """Parse the command line and run encode or decode."""
    # --secret is accepted before or after the command; SUPPRESS keeps the later one from
    # overwriting the earlier with its default.
    secret_opt = argparse.ArgumentParser(add_help=False)
    secret_opt.add_argument("--secret", default=argparse.SUPPRESS,
                            help="HS256 secret (default: $JWT_SECRET)")
    parser = argparse.ArgumentParser(description=__doc__, parents=[secret_opt])
    commands = parser.add_subparsers(dest="command", required=True)
    enc = commands.add_parser("encode", parents=[secret_opt], help="print a signed token")
    enc.add_argument("claims", help='JSON object, e.g. \'{"team_id": "t", "token_id": "k"}\'')
    enc.add_argument("--expires-in", type=_positive_int, metavar="SECONDS",
                     help="add an exp claim this many seconds from now")
    enc.add_argument("--models", action="append", metavar="NAME_OR_PATTERN",
                     help="allow only these models (repeat or comma-separate; fnmatch patterns "
                          "such as 'Smol*'); sets the models claim")
    enc.add_argument("--rpm", type=int, help="this token's requests per minute (0: no limit)")
    enc.add_argument("--tpm", type=int,
                     help="this token's generated tokens per minute (0: no limit)")
    dec = commands.add_parser("decode", parents=[secret_opt],
                              help="verify a token and print its claims")
    dec.add_argument("token")
    args = parser.parse_args(argv)

    secret = getattr(args, "secret", None) or os.environ.get("JWT_SECRET", "")
    if not secret:
        return _fail("no secret: pass --secret or set JWT_SECRET")
    if args.command == "encode":
        policy = {name: getattr(args, name) for name in ("rpm", "tpm")
                  if getattr(args, name) is not None}
        if args.models is not None:
            policy["models"] = [m.strip() for arg in args.models for m in arg.split(",")
                                if m.strip()]
        return encode(secret, args.claims, args.expires_in, policy)
    return decode(secret, args.token)


if __name__ == "__main__":
    sys.exit(main())
