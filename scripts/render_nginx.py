#!/usr/bin/env python3
"""Render deploy/nginx/nginx.conf.template as the edge's start-up envsubst would, without it.

Only the template's own placeholders are replaced (`${NAME}` of PLACEHOLDERS); nginx's
`$variables` stay as they are, and a placeholder without a value is an error rather than an
empty string, which envsubst would leave behind silently.

    scripts/render_nginx.py --api-replicas api-1:7000,api-2:7000 > nginx.conf
    PUBLIC_PORT=8080 PROXY_UPSTREAM=proxy:1223 INTERNAL_PORT=8081 scripts/render_nginx.py ...
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "nginx.conf.template"
PLACEHOLDERS = ("PUBLIC_PORT", "PROXY_UPSTREAM", "INTERNAL_PORT", "API_UPSTREAM_SERVERS")
# string.Template's braced form; the bare $NAME form is nginx's and is never a placeholder.
BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# One failure takes a replica out for this long; then one request tries it again.
FAIL_TIMEOUT = "3s"


def server_lines(replicas: list[str], fail_timeout: str = FAIL_TIMEOUT) -> str:
    """API_UPSTREAM_SERVERS for replicas given as host:port."""
    return "\n        ".join(f"server {replica} max_fails=1 fail_timeout={fail_timeout};"
                     for replica in replicas)


def render(values: dict[str, str], template: str | None = None) -> str:
    """The template with every placeholder replaced; KeyError names one without a value."""
    text = TEMPLATE.read_text() if template is None else template
    missing = [name for name in PLACEHOLDERS if not values.get(name)]
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")

    def value(match: re.Match) -> str:
        name = match.group(1)
        return values[name] if name in PLACEHOLDERS else match.group(0)

    return BRACED.sub(value, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-replicas", help="host:port,host:port,... (API_UPSTREAM_SERVERS "
                                               "with the default health-check parameters)")
    args = parser.parse_args()
    values = {name: os.environ.get(name, "") for name in PLACEHOLDERS}
    if args.api_replicas:
        values["API_UPSTREAM_SERVERS"] = server_lines(args.api_replicas.split(","))
    try:
        sys.stdout.write(render(values))
    except KeyError as exc:
        print(f"error: {exc.args[0]} (set it in the environment)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
