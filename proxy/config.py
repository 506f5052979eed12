"""ProxyConfig: the proxy's settings, read once from the environment and validated."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from common.settings import ConfigError
from common.settings import check as _check
from common.settings import env_field as _env
from common.settings import from_env

from .claims import MAX_RATE

# Below this many bytes an HS256 secret can be brute-forced offline from any token.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class ProxyConfig:
    """Every setting of the proxy; docs/proxy.md describes each variable."""

    jwt_secret: str = _env("JWT_SECRET", "", keep_spaces=True, repr=False)
    upstream_url: str = _env("UPSTREAM_URL", "http://127.0.0.1:7000")
    host: str = _env("PROXY_HOST", "0.0.0.0")
    port: int = _env("PROXY_PORT", 1223)
    # /metrics is served only here, apart from the public port: operators' scrapers reach it,
    # clients do not (0: no metrics listener).
    metrics_host: str = _env("PROXY_METRICS_HOST", "127.0.0.1")
    metrics_port: int = _env("PROXY_METRICS_PORT", 1224)
    # Longest the upstream may stay silent: before its headers (-> 504) or between two chunks.
    # A non-streamed answer is silent for its whole generation, hence minutes, not seconds.
    upstream_timeout_s: float = _env("PROXY_UPSTREAM_TIMEOUT", 600.0)
    max_streams_per_token: int = _env("PROXY_MAX_STREAMS_PER_TOKEN", 0)
    max_body_bytes: int = _env("PROXY_MAX_BODY_BYTES", 8 << 20)
    # What a client may take: its request line and headers, its body, its pause between requests.
    header_timeout_s: float = _env("PROXY_HEADER_TIMEOUT", 10.0)
    body_timeout_s: float = _env("PROXY_BODY_TIMEOUT", 60.0)
    keepalive_timeout_s: float = _env("PROXY_KEEPALIVE_TIMEOUT", 5.0)
    # How long a client that does not read its answer may keep the proxy (and an API row) waiting.
    send_timeout_s: float = _env("PROXY_SEND_TIMEOUT", 60.0)
    # After SIGTERM: how long running requests may take to finish before the proxy exits.
    drain_timeout_s: float = _env("PROXY_DRAIN_TIMEOUT", 30.0)
    # Longest a token may still be valid for, from now (0: any exp up to year 9999).
    max_token_lifetime_s: int = _env("PROXY_MAX_TOKEN_LIFETIME", 0)
    # Per token and window: requests, and tokens generated (0: no limit); claims rpm/tpm override.
    rate_limit_rpm: int = _env("PROXY_RATE_LIMIT_RPM", 0)
    rate_limit_tpm: int = _env("PROXY_RATE_LIMIT_TPM", 0)
    # The window the two limits count over: a minute, as their names say (shorter for tests).
    rate_limit_window_s: float = _env("PROXY_RATE_LIMIT_WINDOW", 60.0)

    def __post_init__(self):
        if not self.jwt_secret:
            raise ConfigError("JWT_SECRET is not set: the proxy needs the HS256 secret "
                              "its tokens are signed with")
        object.__setattr__(self, "upstream_url", self.upstream_url.rstrip("/"))
        parts = urlsplit(self.upstream_url)
        _check(parts.scheme in ("http", "https") and bool(parts.netloc)
               and not parts.query and not parts.fragment,
               "UPSTREAM_URL", self.upstream_url, "an http:// or https:// URL without query")
        _check(bool(self.host.strip()), "PROXY_HOST", self.host, "a host name or address")
        _check(1 <= self.port <= 65535, "PROXY_PORT", self.port, "1..65535")
        _check(bool(self.metrics_host.strip()), "PROXY_METRICS_HOST", self.metrics_host,
               "a host name or address")
        _check(0 <= self.metrics_port <= 65535 and self.metrics_port != self.port,
               "PROXY_METRICS_PORT", self.metrics_port, "0 (off)..65535, not PROXY_PORT")
        for name, value in (("PROXY_UPSTREAM_TIMEOUT", self.upstream_timeout_s),
                            ("PROXY_HEADER_TIMEOUT", self.header_timeout_s),
                            ("PROXY_BODY_TIMEOUT", self.body_timeout_s),
                            ("PROXY_KEEPALIVE_TIMEOUT", self.keepalive_timeout_s),
                            ("PROXY_SEND_TIMEOUT", self.send_timeout_s)):
            _check(0 < value <= 86400, name, value, "seconds, > 0 and <= 86400")
        _check(0 <= self.drain_timeout_s <= 3600, "PROXY_DRAIN_TIMEOUT", self.drain_timeout_s,
               "seconds, 0..3600")
        _check(0 <= self.max_token_lifetime_s <= 100 * 365 * 86400, "PROXY_MAX_TOKEN_LIFETIME",
               self.max_token_lifetime_s, "seconds, 0 (no cap) up to 100 years")
        _check(0 <= self.max_streams_per_token <= 100_000, "PROXY_MAX_STREAMS_PER_TOKEN",
               self.max_streams_per_token, "0 (off)..100000")
        for name, value in (("PROXY_RATE_LIMIT_RPM", self.rate_limit_rpm),
                            ("PROXY_RATE_LIMIT_TPM", self.rate_limit_tpm)):
            _check(0 <= value <= MAX_RATE, name, value, f"0 (off)..{MAX_RATE}")
        _check(0.1 <= self.rate_limit_window_s <= 86400, "PROXY_RATE_LIMIT_WINDOW",
               self.rate_limit_window_s, "seconds, 0.1..86400")
        _check(1024 <= self.max_body_bytes, "PROXY_MAX_BODY_BYTES", self.max_body_bytes,
               ">= 1024")

    @property
    def secret_is_short(self) -> bool:
        """Whether the secret is shorter than HS256 needs to resist brute force."""
        return len(self.jwt_secret.encode()) < MIN_SECRET_BYTES

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "ProxyConfig":
        """Build a ProxyConfig from the environment (variable names in each field's metadata)."""
        return from_env(cls, environ, **overrides)
