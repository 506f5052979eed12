"""Gunicorn settings for the proxy: one process, many threads, streams never timed out."""
import sys

from proxy.config import ConfigError, ProxyConfig

try:
    _config = ProxyConfig.from_env()
except ConfigError as err:
    # One line and a non-zero exit rather than gunicorn's traceback.
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

wsgi_app = "proxy.app:create_app()"
bind = f"{_config.host}:{_config.port}"
worker_class = "gthread"
# One process: the per-token limits and the metrics live in its memory.
workers = 1
# Each open stream holds a thread for its whole length.
threads = _config.threads
worker_connections = _config.threads + 1000
# gthread workers heartbeat from their main loop, so this only catches a hung process,
# never a long stream.
timeout = 60
graceful_timeout = 30
keepalive = 5
# The proxy writes its own one-line access log.
accesslog = None
# Gunicorn's control socket has one default path per user, which every other gunicorn on
# the host (the API server too) would take over; the proxy does not need it.
control_socket_disable = True
