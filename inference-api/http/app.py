"""The Flask app factory: routes, errors, request ids and the backend's life cycle."""
from __future__ import annotations

import logging

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from common.request_id import request_id_for
from inference_api.config import Config
from inference_api.quote import quote_name
from inference_api.serving.engine_client import EngineClient
from inference_api.serving.errors import ContextExceeded, Unavailable
from inference_api.serving.models import Models

from .anthropic.routes import anthropic
from .errors import ApiError, error_answer, from_serving
from .health import health
from .metrics import install_metrics
from .native.generate import generate
from .native.routes import native
from .openai.routes import openai
from .openai.tokens import tokens
from .openapi import openapi
from .responses.routes import responses
from .responses.store import ResponseStore
from .solve.routes import solve
from .plumbing import finish_body


def create_server(config: Config | None = None, start_backend: bool = True) -> Flask:
    """Build the app; starts the backend process unless told not to (for tests of routes alone)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = config or Config.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False  # keep fields in the order made: top_logprobs likeliest first
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["models"] = models = Models(config, start_backend=start_backend)
    app.extensions["inference"] = models.default
    app.extensions["responses"] = ResponseStore(config.responses_store_max,
                                                config.responses_store_ttl_s)

    app.register_blueprint(health)
    app.register_blueprint(native)
    app.register_blueprint(openai)
    app.register_blueprint(anthropic)
    app.register_blueprint(responses)
    app.register_blueprint(tokens)
    app.register_blueprint(generate)
    app.register_blueprint(openapi)
    app.register_blueprint(solve)
    install_metrics(app, models)
    app.after_request(finish_body)
    _install_request_ids(app)
    _install_error_handlers(app)
    return app


def engine_of(app: Flask) -> EngineClient:
    """The default model's engine client of an app made by create_server."""
    return app.extensions["inference"]


def models_of(app: Flask) -> Models:
    """Every served model of an app made by create_server."""
    return app.extensions["models"]


def _install_request_ids(app: Flask) -> None:
    @app.before_request
    def take_request_id():
        g.request_id = request_id_for(request.headers.get("X-Request-ID"))

    @app.after_request
    def give_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


def _install_error_handlers(app: Flask) -> None:
    """One set of handlers: every error in the shape of the route asked (errors.error_answer)."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        _log_refusal(exc.status, exc.message)
        return error_answer(exc)

    @app.errorhandler(Unavailable)
    @app.errorhandler(ContextExceeded)
    def serving_refusal(exc: Unavailable | ContextExceeded):
        return api_error(from_serving(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        path = quote_name(request.path)  # a request line may be 4 KB long
        messages = {404: f"no route {path}",
                    405: f"method {quote_name(request.method)} is not allowed on {path}",
                    413: f"the request body is over {app.config['MAX_CONTENT_LENGTH']} bytes"}
        message = messages.get(exc.code, exc.description)
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}
        # A /v1 path no route matches (a model id with a newline, say) still gets OpenAI's
        # shape, as the openai client expects under its base URL.
        return api_error(ApiError(exc.code, message, headers,
                                  code="unknown_url" if exc.code == 404 else None))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("request %s failed", g.get("request_id"))
        return error_answer(ApiError(500, f"internal error: {type(exc).__name__}"))


def _log_refusal(status: int, message: str) -> None:
    logging.getLogger("inference_api.requests").info(
        "request %s %s status=%s message=%r", g.get("request_id", "-"), request.path, status, message)
