"""The HTTP side's one way to the backend: admission, a request's outputs as they come, cancel
when the client leaves, and the request log."""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from inference_api.config import Config
from inference_api.process_messages import FINISH_CANCELLED, FINISH_ERROR, Output
from inference_api.sampling_params import check_context, sampling_defaults

from .backend_link import BackendLink, Job, LinkState, NotReady, Overloaded, RequestOutputs
from .errors import ContextExceeded, Unavailable
from .prompts import PromptEncoder

log = logging.getLogger("inference_api.requests")
CLIENT_CHECK_SECONDS = 0.5


@dataclass
class Record:
    """What the request log line says about one generation."""

    request_id: str
    route: str
    model: str = ""  # the served model whose backend runs it (metrics label by it)
    started: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt's tokens, those found in the cache (prefix reuse)
    completion_tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None  # for the inter-token latency metric
    finish_reason: str | None = None
    error: str | None = None

    def log_line(self, status: int = 200) -> None:
        """One line per request: id, status, tokens, time to first token, total time."""
        ttft = f"{self.first_token_at - self.started:.3f}s" if self.first_token_at else "-"
        log.info("request %s %s model=%s status=%s prompt_tokens=%d cached_tokens=%d "
                 "completion_tokens=%d ttft=%s total=%.3fs finish=%s%s", self.request_id,
                 self.route, self.model, status, self.prompt_tokens, self.cached_tokens,
                 self.completion_tokens, ttft,
                 time.monotonic() - self.started, self.finish_reason,
                 f" error={self.error!r}" if self.error else "")


@dataclass
class Generations:
    """An open request: its samples' queue at the backend link and a log record per sample."""

    outputs: RequestOutputs
    records: list[Record]


class EngineClient:
    """The server's state: config, backend link and the served model's prompt encoder."""

    def __init__(self, config: Config, start_backend: bool = True):
        self.config = config
        self.encoder: PromptEncoder | None = None
        self.sampling_defaults: dict = sampling_defaults({})
        self.draining = False
        self.metrics = None  # an observer of batches and generations, set by the HTTP side
        self.link = BackendLink(config, on_ready=self._ready) if start_backend else None

    def _ready(self, info: dict) -> None:
        self.encoder = PromptEncoder(info)
        self.sampling_defaults = sampling_defaults(info.get("generation_config") or {})

    @property
    def model_names(self) -> list[str]:
        """The names requests may ask for: the base model's, then each LoRA adapter's."""
        return [self.config.model_id, *self.config.lora_adapters]

    def served_text(self) -> str:
        """The served names as a message lists them: 'base', 'adapter', ..."""
        return ", ".join(repr(name) for name in self.model_names)

    def adapter_for(self, model: str) -> str | None:
        """The LoRA adapter a served model name runs with: None for the base model."""
        return None if model == self.config.model_id else model

    def defaults_for(self, body) -> dict:
        """The sampling defaults of the fields a request body left out."""
        return {name: value for name, value in self.sampling_defaults.items()
                if name in type(body).model_fields and name not in body.model_fields_set}

    @property
    def context_len(self) -> int:
        """Tokens a prompt and its answer may hold together."""
        return self.link.info.get("max_seq_len", self.config.max_seq_len)

    def require_ready(self) -> PromptEncoder:
        """The prompt encoder, or Unavailable while the backend is not ready."""
        if self.draining:
            raise Unavailable("the server is shutting down", 5, "unavailable")
        if self.link.state != LinkState.READY or self.encoder is None:
            raise Unavailable(self.link.message, 5, "unavailable")
        return self.encoder

    def fit_max_tokens(self, prompt_tokens: int, max_tokens: int | None, default: int = 256) -> int:
        """The max_tokens to use; ContextExceeded when the prompt leaves no room for them."""
        room = self.context_len - prompt_tokens
        if max_tokens is None:
            if room >= 1:
                return min(default, room)
            max_tokens = 1
        try:
            check_context(prompt_tokens, max_tokens, self.context_len)
        except ValueError as exc:
            raise ContextExceeded(str(exc)) from None
        return max_tokens

    def open(self, jobs: list[Job], request_id: str, route: str) -> Generations:
        """Send a request's prompts to the backend; Unavailable when it is not ready or too full."""
        try:
            outputs = self.link.open(jobs)
        except Overloaded as exc:
            raise Unavailable(str(exc), 1, "overloaded") from None
        except NotReady as exc:
            raise Unavailable(str(exc), 5, "unavailable") from None
        return Generations(outputs, [Record(request_id, route, self.config.model_id,
                                            prompt_tokens=len(job.prompt_ids)) for job in jobs])

    def batches(self, generations: Generations, client_gone: Callable[[], bool]
                ) -> Iterator[tuple[int, list[Output]]]:
        """(sample index, its new Outputs) as they come; several at once when the client is slow.

        Ends when every sample has finished, when the client goes away, or when the generator is
        closed; in every case the request is closed (what still runs is cancelled) and each
        sample is logged once.
        """
        outputs, records = generations.outputs, generations.records
        running = set(range(len(records)))
        try:
            next_check = time.monotonic() + CLIENT_CHECK_SECONDS
            while running:
                try:
                    first = outputs.queue.get(timeout=max(0.0, next_check - time.monotonic()))
                except queue.Empty:
                    first = None
                # Checked on a clock, not only when no output comes: an answer sent in one
                # piece writes nothing while tokens flow, so only this notices its client left.
                if time.monotonic() >= next_check:
                    if client_gone():
                        return
                    next_check = time.monotonic() + CLIENT_CHECK_SECONDS
                if first is None:
                    continue
                for index, batch in _by_sample(outputs, [first] + _waiting(outputs.queue)):
                    self._note(records[index], batch)
                    if batch[-1].finish_reason is not None:
                        running.discard(index)
                    yield index, batch
        finally:
            self.link.close(outputs)
            for record in records:
                record.finish_reason = record.finish_reason or FINISH_CANCELLED
                record.log_line()
                if self.metrics is not None:
                    self.metrics.observe_end(record)

    def _note(self, record: Record, batch: list[Output]) -> None:
        last = batch[-1]
        record.completion_tokens = last.completion_tokens or record.completion_tokens
        if batch[0].cached_tokens is not None:  # the first Output of the generation
            record.cached_tokens = batch[0].cached_tokens
        if record.first_token_at is None and any(o.num_tokens for o in batch):
            record.first_token_at = time.monotonic()
        if self.metrics is not None:
            self.metrics.observe_batch(record, batch)
        if last.finish_reason is not None:
            record.finish_reason, record.error = last.finish_reason, last.error
            if last.finish_reason == FINISH_ERROR:
                log.error("request %s ended early: %s", record.request_id, last.error)


def _waiting(outputs: queue.Queue) -> list[Output]:
    """Every Output already on the queue (a slow client gets them as one batch)."""
    waiting = []
    while True:
        try:
            waiting.append(outputs.get_nowait())
        except queue.Empty:
            return waiting


def _by_sample(outputs: RequestOutputs, batch: list[Output]) -> list[tuple[int, list[Output]]]:
    """A batch split by sample, each sample's Outputs in order, samples in order of arrival."""
    groups: dict[int, list[Output]] = {}
    for output in batch:
        groups.setdefault(outputs.index_of(output.session_id), []).append(output)
    return list(groups.items())
