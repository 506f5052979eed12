"""Settings read once from the environment: a variable per dataclass field, parsed and checked.

Both the API's Config and the proxy's ProxyConfig are frozen dataclasses built by from_env; a
bad value stops the server with one line naming the variable.
"""
from __future__ import annotations

import os
from dataclasses import field, fields


class ConfigError(ValueError):
    """A setting is missing or out of range; the message names the variable."""


def env_field(name: str, default, keep_spaces: bool = False, **kwargs):
    """A dataclass field read from the variable `name` (keep_spaces: not stripped, for secrets)."""
    return field(default=default, metadata={"env": name, "keep_spaces": keep_spaces}, **kwargs)


def env_name(f) -> str:
    """The variable a field is read from: its own, or the field's name in upper case."""
    return f.metadata.get("env", f.name.upper())


def parse(name: str, raw: str, default, keep_spaces: bool = False):
    """The variable's text as the default's type; ConfigError naming it if it is not one."""
    if isinstance(default, str):
        return raw if keep_spaces else raw.strip()
    raw = raw.strip()
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        value = type(default)(raw)
    except ValueError:
        kind = ("a boolean (0|1)" if isinstance(default, bool)
                else "an integer" if isinstance(default, int) else "a number")
        raise ConfigError(f"{name}={raw!r} is not valid: expected {kind}") from None
    if value != value:  # NaN passes every range check by comparing false
        raise ConfigError(f"{name}={raw!r} is not valid: expected a number")
    return value


def check(ok: bool, name: str, value, allowed: str) -> None:
    """ConfigError naming the variable, its value and what is allowed, unless ok."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is not valid: expected {allowed}")


def from_env(cls, environ=None, **overrides):
    """An instance of the settings dataclass cls from the environment; empty means default."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(cls):
        name = env_name(f)
        if environ.get(name, "") != "":
            values[f.name] = parse(name, environ[name], f.default,
                                   f.metadata.get("keep_spaces", False))
    values.update(overrides)
    return cls(**values)
