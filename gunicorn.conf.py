"""gunicorn settings for the Inference API: one worker (it owns the backend), many stream threads."""
import sys

from common.settings import ConfigError
from inference_api.config import Config

try:
    _config = Config.from_env()
except ConfigError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

wsgi_app = "inference_api.http.app:create_server()"
bind = f"{_config.service_host}:{_config.service_port}"
# One worker: the worker process owns the decode backend, which owns the model and its rows.
workers = 1
# gthread that keeps answering (503) while it drains on SIGTERM, with JSON error pages.
worker_class = "inference_api.http.worker.ApiWorker"
# A thread per running stream, per waiting prompt (of every model), and spare for health checks
# and refusals.
threads = sum(c.max_users + c.max_queue for c in _config.model_configs()) + 16
# gthread's timeout watches the worker's own loop, not request length: long streams are safe.
timeout = 120
# The master kills the worker after this: the drain, then time to stop the backend.
graceful_timeout = int(_config.drain_timeout_s) + 15
keepalive = 5
accesslog = None
# Each gunicorn would otherwise claim the same per-user control socket; this server needs none.
control_socket_disable = True


def worker_exit(server, worker):
    """Stop the backend processes once the worker's streams have ended."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "models" in app.extensions:
        app.extensions["models"].stop()
