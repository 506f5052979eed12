"""GET /health: loading, ready or dead, and how busy."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

health = Blueprint("health", __name__)


@health.get("/health")
def health_check():
    """200 with the load figures once the backend is ready; 503 with the reason otherwise."""
    from .server import error_response, frontend_of

    frontend = frontend_of(current_app)
    link = frontend.link
    if frontend.draining:
        return error_response(503, "the server is shutting down", {"Retry-After": "5"})
    if link.state != "ready" or frontend.encoder is None:
        return error_response(503, link.message, {"Retry-After": "5"})
    return jsonify(status="ok", model=frontend.config.model_id, busy_rows=link.busy_rows,
                   max_users=frontend.config.max_users, queued=link.queued,
                   sessions=link.open_sessions)
