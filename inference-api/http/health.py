"""GET /health: loading, ready or dead, and how busy; each served model's state under `models`."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify
from pydantic import BaseModel

from inference_api.serving.engine_client import EngineClient
from inference_api.serving.errors import Unavailable

from .errors import ApiError, error_answer, from_serving
from .plumbing import current_models

health = Blueprint("health", __name__)


class ModelHealth(BaseModel):
    """One served model's backend: its state and load."""

    state: Literal["loading", "ready", "dead", "failed", "stopped"]
    message: str  # why it does not serve, or "ready"
    pid: int | None  # its backend process
    restarts: int  # times its backend died or hung and was started again
    adapters: list[str]  # its LoRA adapters' names, served by the same backend
    max_users: int
    max_seq_len: int
    busy_rows: int
    queued: int
    sessions: int
    cached_rows: int


class Health(BaseModel):
    """GET /health when a backend is ready; the figures are the sums over the models."""

    status: Literal["ok"]
    model: str  # the default (first) model
    busy_rows: int
    max_users: int
    queued: int
    sessions: int
    cached_rows: int  # free rows whose cache is kept for prefix reuse
    row_faults: list[str]  # empty unless the backend's row accounting is broken
    batch_invariant: bool  # BATCH_INVARIANT: answers independent of what runs beside them
    models: dict[str, ModelHealth]  # every served model by name, in MODELS' order


@health.get("/health")
def health_check():
    """200 with the load figures while a backend is ready (MODELS: at least one); 503 with the
    reason otherwise. A load balancer keeps a replica that serves some of its models."""
    models = current_models()
    states = {name: model_health(engine) for name, engine in models.engines.items()}
    ready = [engine for engine in models.engines.values() if _refusal(engine) is None]
    if not ready:
        # Loading, restarting, failed or draining (or ready since a moment ago: refused anyway).
        refusal = _refusal(models.default) or ApiError(503, "no model is ready",
                                                       {"Retry-After": "5"}, "unavailable")
        if models.several and not models.draining:
            refusal.message = "no model is ready: " + "; ".join(
                f"{name}: {state['message']}" for name, state in states.items())
        answer = error_answer(refusal)
        answer.set_data(jsonify({**answer.get_json(), "models": states}).get_data())
        return answer
    row_faults = [fault if not models.several else f"{engine.config.model_id}: {fault}"
                  for engine in ready for fault in engine.link.row_faults]
    return jsonify(status="ok", model=models.default.config.model_id,
                   busy_rows=sum(s["busy_rows"] for s in states.values()),
                   max_users=sum(s["max_users"] for s in states.values()),
                   queued=sum(s["queued"] for s in states.values()),
                   sessions=sum(s["sessions"] for s in states.values()),
                   cached_rows=sum(s["cached_rows"] for s in states.values()),
                   row_faults=row_faults, batch_invariant=models.config.batch_invariant,
                   models=states)


def _refusal(engine: EngineClient) -> ApiError | None:
    try:
        engine.require_ready()
    except Unavailable as exc:
        return from_serving(exc)
    return None


def model_health(engine: EngineClient) -> dict:
    """One model's entry of /health's `models` map."""
    link, config = engine.link, engine.config
    process = getattr(link, "process", None)
    return {"state": link.state.value if link else "stopped",
            "message": link.message if link else "no backend",
            "pid": process.pid if process is not None else None,
            "restarts": link.restarts if link else 0,
            "adapters": list(config.lora_adapters), "max_users": config.max_users,
            "max_seq_len": link.info.get("max_seq_len", config.max_seq_len) if link
            else config.max_seq_len,
            "busy_rows": link.busy_rows if link else 0, "queued": link.queued if link else 0,
            "sessions": link.open_sessions if link else 0,
            "cached_rows": link.cached_rows if link else 0}
