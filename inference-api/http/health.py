"""GET /health: loading, ready or dead, and how busy."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .plumbing import ApiError, current_frontend, error_answer

health = Blueprint("health", __name__)


@health.get("/health")
def health_check():
    """200 with the load figures once the backend is ready; 503 with the reason otherwise."""
    frontend = current_frontend()
    try:
        frontend.require_ready()
    except ApiError as exc:
        return error_answer(exc)
    link = frontend.link
    return jsonify(status="ok", model=frontend.config.model_id, busy_rows=link.busy_rows,
                   max_users=frontend.config.max_users, queued=link.queued,
                   sessions=link.open_sessions)
