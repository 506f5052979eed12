"""The server's side of the queues: the backend process, its health, and one queue per request."""
from __future__ import annotations

import enum
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from inference_api.backend.process import start_backend
from inference_api.config import Config
from inference_api.process_messages import (FINISH_ERROR, Cancel, Fatal, Heartbeat, Output, Ready,
                                            Shutdown, Submit)

log = logging.getLogger(__name__)
# What a client caught by a backend death or a shutdown is told to wait before sending again:
# about what a restarted backend takes to be ready.
RETRY_AFTER_S = 5


class LinkState(str, enum.Enum):
    """Where the backend process is in its life."""

    LOADING = "loading"
    READY = "ready"
    DEAD = "dead"  # died or went silent; a new process is being started
    FAILED = "failed"  # cannot start (a bad model, say): stays so until the server restarts
    STOPPED = "stopped"


class Overloaded(Exception):
    """Too many prompts wait already: the client should retry later."""


class NotReady(Exception):
    """The backend is loading, restarting or failed."""


@dataclass
class Job:
    """One generation to run: a prompt, its sampling parameters and its text (for return_prompt)."""

    prompt_ids: list[int]
    params: object  # SamplingParams
    prompt_text: str = ""
    adapter: str | None = None  # the LoRA adapter the request's model name picked


@dataclass
class RequestOutputs:
    """One request's generations (its samples) and the single queue their Outputs arrive on."""

    sample_ids: list[str]  # the backend's session id of each sample, by sample index
    queue: queue.Queue = field(default_factory=queue.Queue)  # of Output, in arrival order
    unfinished: set[str] = field(default_factory=set)

    def index_of(self, sample_id: str) -> int:
        """The sample index of a session id."""
        return self.sample_ids.index(sample_id)


class BackendLink:
    """Starts the backend, reads its output queue in one thread, and routes outputs to requests."""

    def __init__(self, config: Config, on_ready=None):
        self.config = config
        self.on_ready = on_ready  # called with the backend's info when it becomes ready
        self.state = LinkState.LOADING
        self.message = "the model is loading"
        self.info: dict = {}
        self.busy_rows = 0
        self.queued = 0
        self.cached_rows = 0
        self.row_faults: list[str] = []
        self.restarts = 0
        self.last_beat = time.monotonic()
        self._requests: dict[str, RequestOutputs] = {}  # by the session id of each sample
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._start_process()
        self._reader = threading.Thread(target=self._read_backend, name="backend-output-reader",
                                        daemon=True)
        self._reader.start()

    # -- requests, used by request threads ----------------------------------------------------

    @property
    def open_sessions(self) -> int:
        """Generations whose request is still open (each holds or waits for a row)."""
        return len(self._requests)

    def open(self, jobs: list[Job]) -> RequestOutputs:
        """Send a request's prompts to the backend: all of them, or none (NotReady, Overloaded)."""
        with self._lock:
            if self.state != LinkState.READY:
                raise NotReady(self.message)
            if len(self._requests) + len(jobs) > self.config.max_users + self.config.max_queue:
                raise Overloaded(f"{self.config.max_queue} prompts are already waiting for a row")
            outputs = RequestOutputs([uuid.uuid4().hex for _ in jobs])
            outputs.unfinished.update(outputs.sample_ids)
            for sample_id, job in zip(outputs.sample_ids, jobs):
                self._requests[sample_id] = outputs
                self.inputs.put(Submit(sample_id, job.prompt_ids, job.params, job.prompt_text,
                                       job.adapter))
        return outputs

    def close(self, outputs: RequestOutputs) -> None:
        """Forget a request; cancel its generations that still run."""
        with self._lock:
            for sample_id in outputs.sample_ids:
                self._requests.pop(sample_id, None)
            if self.state == LinkState.READY:
                for sample_id in outputs.unfinished:
                    self.inputs.put(Cancel(sample_id))
            outputs.unfinished.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the backend process and the reader (once; later calls do nothing)."""
        with self._lock:
            if self.state == LinkState.STOPPED:
                return
            self.state, self.message = LinkState.STOPPED, "the server is shutting down"
        try:
            self.inputs.put(Shutdown())
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._stopping.set()  # the reader routed the backend's last outputs until now
        self._reader.join(timeout)
        self._end_requests("the server is shutting down")

    # -- the reader thread ----------------------------------------------------------------

    def _start_process(self) -> None:
        self.process, self.inputs, self.from_backend = start_backend(self.config)
        self.started_at = time.monotonic()

    def _read_backend(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self.from_backend.get(timeout=0.25)
            except queue.Empty:
                self._check_alive()
                continue
            except (EOFError, OSError):
                self._check_alive(force_dead=True)
                continue
            for item in message if isinstance(message, list) else [message]:
                self._handle(item)

    def _handle(self, item) -> None:
        if isinstance(item, Output):
            self._route(item)
        elif isinstance(item, Heartbeat):
            self.last_beat = time.monotonic()
            self.busy_rows, self.queued = item.busy_rows, item.queued
            self.cached_rows, self.row_faults = item.cached_rows, item.row_faults
        elif isinstance(item, Ready):
            self.last_beat = time.monotonic()
            self.info = item.info
            if self.on_ready is not None:
                self.on_ready(item.info)
            with self._lock:
                self.state, self.message = LinkState.READY, "ready"
            log.info("backend ready (pid %s)", self.process.pid)
        elif isinstance(item, Fatal):
            with self._lock:
                self.state = LinkState.FAILED
                self.message = f"the backend failed to start: {item.message}"
            log.error("%s", self.message)

    def _route(self, output: Output) -> None:
        """Put an Output on its request's queue; a closed request's outputs are dropped."""
        with self._lock:
            outputs = self._requests.get(output.session_id)
            if outputs is None:
                return
            if output.finish_reason is not None:
                outputs.unfinished.discard(output.session_id)
        outputs.queue.put(output)

    def _end_requests(self, error: str) -> None:
        """End every generation still running with an error the client may retry after."""
        with self._lock:
            ended = [(outputs, sample_id) for sample_id, outputs in self._requests.items()
                     if sample_id in outputs.unfinished]
            for outputs, sample_id in ended:
                outputs.unfinished.discard(sample_id)
        for outputs, sample_id in ended:
            outputs.queue.put(Output(sample_id, "", finish_reason=FINISH_ERROR, error=error,
                                     retry_after=RETRY_AFTER_S))

    def _check_alive(self, force_dead: bool = False) -> None:
        """Notice a dead or silent backend: end its requests and start a fresh process."""
        if self.state in (LinkState.FAILED, LinkState.STOPPED):
            return
        now = time.monotonic()
        silent = (self.state == LinkState.READY
                  and now - self.last_beat > self.config.heartbeat_timeout_s)
        stuck = (self.state == LinkState.LOADING
                 and now - self.started_at > self.config.backend_start_timeout_s)
        if not (force_dead or silent or stuck or not self.process.is_alive()):
            return
        reason = ("exited with code %s" % self.process.exitcode if not self.process.is_alive()
                  else "stopped answering")
        log.error("backend process %s %s; restarting it", self.process.pid, reason)
        with self._lock:
            self.state, self.message = LinkState.DEAD, f"the backend {reason}; restarting"
        self._end_requests(f"the backend {reason}")
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.restarts += 1
        with self._lock:
            self._start_process()
            self.last_beat = time.monotonic()
            self.state, self.message = LinkState.LOADING, "the backend is restarting"
