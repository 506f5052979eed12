"""Why the serving layer refuses a request, in its own words; the HTTP side picks the status."""
from __future__ import annotations


class Unavailable(Exception):
    """Not now: the backend is loading, restarting or failed, the server is draining, or too
    many prompts wait for a row. The client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int, code: str):
        super().__init__(message)
        self.retry_after, self.code = retry_after, code


class ContextExceeded(ValueError):
    """The prompt, or the prompt with its max_tokens, does not fit the model's context."""


class UnknownModel(LookupError):
    """No model or adapter here has the name a request asked for."""

    def __init__(self, name: str, served: str):
        super().__init__(name)
        self.name, self.served = name, served
