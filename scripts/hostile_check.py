#!/usr/bin/env python3
"""Attack the proxy and the Inference API as a hostile client would, and report what held.

Sections: 1 bad inputs, 2 slow connections, 3 disconnects, 4 backend death mid-stream,
5 SIGTERM drain. By default it starts a stack of its own on free loopback ports (the mock API
under gunicorn, the proxy in front with a random secret) and stops it at the end.
Exit code 1 if any check failed, 2 if the stack could not be started.
"""
from __future__ import annotations

import argparse
import os
import resource
import signal
import sys

# Python puts this script's directory first on sys.path, so the package beside it imports.
from hostile.bad_inputs import section_bad_inputs
from hostile.disconnects import section_disconnects
from hostile.failures import section_backend_death, section_drain
from hostile.report import Check, print_json, print_report
from hostile.slow_clients import section_slow_sockets
from hostile.stack import BIN, get_health, open_stack, stop_stack

SECTIONS = {"1": section_bad_inputs, "2": section_slow_sockets, "3": section_disconnects,
            "4": section_backend_death, "5": section_drain}


def parse_args(argv=None):
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("mock", "real"), default="mock", help="backend to start")
    p.add_argument("--proxy-cmd", default=f"{BIN / 'gunicorn'} --config proxy/gunicorn.conf.py",
                   help="command that starts the proxy, run from the repository root")
    p.add_argument("--api-url", help="attack a running API instead of starting one")
    p.add_argument("--proxy-url", help="the running proxy in front of --api-url")
    p.add_argument("--secret", help="the running proxy's JWT_SECRET (default: $JWT_SECRET)")
    p.add_argument("--api-pid", type=int, help="the running API's gunicorn master (sections 4, 5)")
    p.add_argument("--sections", default="12345", help="which sections to run, e.g. 13")
    p.add_argument("--mock-step-ms", type=float, default=10.0)
    p.add_argument("--section-seconds", type=float, default=300.0, help="bound of section 1")
    p.add_argument("--slow-sockets", type=int, default=1000)
    p.add_argument("--slow-seconds", type=float, default=30.0, help="how long they stay open")
    p.add_argument("--slow-interval", type=float, default=3.0, help="seconds between header lines")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="PROXY_HEADER_TIMEOUT for the proxy started here, if it has that setting")
    p.add_argument("--timed", type=int, default=5, help="timed streams, alone and beside")
    p.add_argument("--clients", type=int, default=8, help="requests per disconnect round")
    p.add_argument("--rounds", type=int, default=3, help="disconnect rounds per case")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="length of the long generations (default 2000 mock, 1000 real)")
    p.add_argument("--free-timeout", type=float, default=30.0, help="longest wait for free rows")
    p.add_argument("--disconnect-target", type=float, default=2.0, help="seconds; slower fails")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.api_url and not (args.proxy_url and (args.secret or os.environ.get("JWT_SECRET"))):
        p.error("--api-url needs --proxy-url and --secret (or JWT_SECRET)")
    args.max_tokens = args.max_tokens or (2000 if args.model == "mock" else 1000)
    return args


def main() -> int:
    """Start or find the stack, run the sections, print the report; 1 if a check failed."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the servers on the way out
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the servers inherit it too
    wanted = min(hard, max(soft, args.slow_sockets + 2048))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        stack = open_stack(args)
    except RuntimeError as exc:
        print(f"error: could not start the stack: {exc}", file=sys.stderr)
        return 2
    checks: list[Check] = []
    try:
        stack.model = get_health(stack.api_url)[1].get("model", "")
        if not stack.model:
            print(f"error: {stack.api_url}/health is not ready", file=sys.stderr)
            return 2
        for key in args.sections:
            try:
                checks += SECTIONS[key](stack, args) if key in SECTIONS else []
            except Exception as exc:  # noqa: BLE001 - a section that breaks is a failed check
                name = f"{key} {SECTIONS[key].__name__.removeprefix('section_')}"
                failure = f"stopped: {type(exc).__name__}: {exc}"
                checks.append(Check(name, "all", failures=[failure]))
            print(f"section {key} done", file=sys.stderr, flush=True)
    finally:
        stop_stack(stack)
    if args.json:
        print_json(checks)
    else:
        print_report(checks)
    return 1 if any(c.failures for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
