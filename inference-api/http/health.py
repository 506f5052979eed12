"""GET /health: loading, ready or dead, and how busy."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify
from pydantic import BaseModel

from inference_api.serving.errors import Unavailable

from .errors import error_answer, from_serving
from .plumbing import current_engine

health = Blueprint("health", __name__)


class Health(BaseModel):
    """GET /health when the backend is ready."""

    status: Literal["ok"]
    model: str
    busy_rows: int
    max_users: int
    queued: int
    sessions: int
    cached_rows: int  # free rows whose cache is kept for prefix reuse
    row_faults: list[str]  # empty unless the backend's row accounting is broken
    batch_invariant: bool  # BATCH_INVARIANT: answers independent of what runs beside them



@health.get("/health")
def health_check():
    """200 with the load figures once the backend is ready; 503 with the reason otherwise."""
    engine = current_engine()
    try:
        engine.require_ready()
    except Unavailable as exc:
        return error_answer(from_serving(exc))
    link = engine.link
    return jsonify(status="ok", model=engine.config.model_id, busy_rows=link.busy_rows,
                   max_users=engine.config.max_users, queued=link.queued,
                   sessions=link.open_sessions, cached_rows=link.cached_rows,
                   row_faults=link.row_faults, batch_invariant=engine.config.batch_invariant)
