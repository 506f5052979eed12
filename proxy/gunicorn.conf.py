"""Gunicorn settings for the proxy: one process, one asyncio event loop (proxy/worker.py)."""
import sys

from common.settings import ConfigError
from proxy.config import ProxyConfig

try:
    _config = ProxyConfig.from_env()
except ConfigError as err:
    # One line and a non-zero exit rather than gunicorn's traceback.
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

wsgi_app = "proxy.app:create_app()"
bind = f"{_config.host}:{_config.port}"
# An event loop holds every connection, however slow; no thread or worker per connection.
worker_class = "proxy.worker.ProxyWorker"
# One process: the per-token limits and the metrics live in its memory.
workers = 1
# The worker heartbeats from its event loop once a second, so this only catches a hung
# process, never a long stream.
timeout = 60
# How long gunicorn waits for the worker after SIGTERM before killing it: the worker drains
# for PROXY_DRAIN_TIMEOUT and then exits by itself. docker-compose's stop_grace_period
# (35 s) is longer than the default.
graceful_timeout = 32
graceful_timeout = max(graceful_timeout, int(_config.drain_timeout_s) + 2)
# The proxy writes its own one-line access log.
accesslog = None
# Gunicorn's control socket has one default path per user, which every other gunicorn on
# the host (the API server too) would take over; the proxy does not need it.
control_socket_disable = True
