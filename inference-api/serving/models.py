"""The served models: one EngineClient (its own backend process, rows and KV cache) per model of
MODELS, or the one model of MODEL_PATH, and the names requests may ask for."""
from __future__ import annotations

from inference_api.config import Config

from .engine_client import EngineClient
from .errors import UnknownModel


class Models:
    """The engine clients by model name, the default (first) one first.

    A request names a model, or one of its LoRA adapters (served by the same backend); one that
    names none goes to the default model.
    """

    def __init__(self, config: Config, start_backend: bool = True):
        self.config = config
        self.engines: dict[str, EngineClient] = {
            model_config.model_id: EngineClient(model_config, start_backend=start_backend)
            for model_config in config.model_configs()}
        self._by_name = {name: engine for engine in self.engines.values()
                         for name in engine.model_names}

    @property
    def default(self) -> EngineClient:
        """The first model's engine client: it serves requests that name no model."""
        return next(iter(self.engines.values()))

    @property
    def several(self) -> bool:
        """Whether MODELS names the models (a backend each) rather than MODEL_PATH alone."""
        return bool(self.config.models.strip())

    @property
    def names(self) -> list[str]:
        """Every name a request may ask for: each model, then its adapters, in MODELS' order."""
        return list(self._by_name)

    def served_text(self) -> str:
        """The served names as a message lists them: 'a', 'a-adapter', 'b', ..."""
        return ", ".join(repr(name) for name in self.names)

    def engine_for(self, name: str | None) -> EngineClient:
        """The engine client serving a model or adapter name (None: the default model);
        UnknownModel when nothing here has that name."""
        if name is None:
            return self.default
        engine = self._by_name.get(name)
        if engine is None:
            raise UnknownModel(name, self.served_text())
        return engine

    # -- the server's life cycle, over every model -------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether the server refuses new requests while its streams end."""
        return self.default.draining

    def start_draining(self) -> None:
        """Refuse new requests on every model (503); running streams go on."""
        for engine in self.engines.values():
            engine.draining = True

    @property
    def open_sessions(self) -> int:
        """Generations still running, over every model."""
        return sum(engine.link.open_sessions for engine in self.engines.values() if engine.link)

    def set_metrics(self, metrics) -> None:
        """Hook one observer of batches and generations into every engine client."""
        for engine in self.engines.values():
            engine.metrics = metrics

    def stop(self) -> None:
        """Stop every backend process (what still runs ends with an error)."""
        for engine in self.engines.values():
            if engine.link is not None:
                engine.link.stop()
