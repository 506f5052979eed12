"""The frontend's side of the queues: the backend process, its health, and one queue per session."""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from .backend import start_backend
from .config import Config
from .protocol import (FINISH_ERROR, Cancel, Fatal, Heartbeat, Output, Ready, Shutdown, Submit)

log = logging.getLogger("inference_api.sessions")

LOADING, READY, DEAD, FAILED, STOPPED = "loading", "ready", "dead", "failed", "stopped"


class Overloaded(Exception):
    """Too many prompts wait already: the client should retry later."""


class NotReady(Exception):
    """The backend is loading, restarting or failed."""


class Session:
    """One request's stream: the outputs of its generation, in order."""

    def __init__(self, session_id: str):
        self.id = session_id
        self.outputs: queue.Queue[Output] = queue.Queue()
        self.finished = False


class BackendLink:
    """Starts the backend, reads its output queue in one thread, and routes outputs to sessions."""

    def __init__(self, config: Config, on_ready=None):
        self.config = config
        self.on_ready = on_ready  # called with the backend's info when it becomes ready
        self.state = LOADING
        self.message = "the model is loading"
        self.info: dict = {}
        self.busy_rows = 0
        self.queued = 0
        self.restarts = 0
        self.last_beat = time.monotonic()
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._start_process()
        self._reader = threading.Thread(target=self._read_outputs, name="backend-output-reader",
                                        daemon=True)
        self._reader.start()

    # -- sessions, used by request threads --------------------------------------------------

    @property
    def open_sessions(self) -> int:
        """Sessions whose request is still running."""
        return len(self._sessions)

    def open_session(self, prompt_ids: list[int], params, prompt_text: str) -> Session:
        """Register a session and send its prompt to the backend."""
        with self._lock:
            if self.state != READY:
                raise NotReady(self.message)
            if len(self._sessions) >= self.config.max_users + self.config.max_queue:
                raise Overloaded(f"{self.config.max_queue} prompts are already waiting for a row")
            session = Session(uuid.uuid4().hex)
            self._sessions[session.id] = session
            self.inputs.put(Submit(session.id, prompt_ids, params, prompt_text))
        return session

    def close_session(self, session: Session) -> None:
        """Forget a session; if its generation is still running, cancel it."""
        with self._lock:
            self._sessions.pop(session.id, None)
            if not session.finished and self.state == READY:
                self.inputs.put(Cancel(session.id))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the backend process and the reader (once; later calls do nothing)."""
        with self._lock:
            if self.state == STOPPED:
                return
            self.state, self.message = STOPPED, "the server is shutting down"
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
        self._end_sessions("the server is shutting down")

    # -- the reader thread ----------------------------------------------------------------

    def _start_process(self) -> None:
        self.process, self.inputs, self.outputs = start_backend(self.config)
        self.started_at = time.monotonic()

    def _read_outputs(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self.outputs.get(timeout=0.25)
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
            session = self._sessions.get(item.session_id)
            if session is not None:
                if item.finish_reason is not None:
                    session.finished = True
                session.outputs.put(item)
        elif isinstance(item, Heartbeat):
            self.last_beat = time.monotonic()
            self.busy_rows, self.queued = item.busy_rows, item.queued
        elif isinstance(item, Ready):
            self.last_beat = time.monotonic()
            self.info = item.info
            if self.on_ready is not None:
                self.on_ready(item.info)
            with self._lock:
                self.state, self.message = READY, "ready"
            log.info("backend ready (pid %s)", self.process.pid)
        elif isinstance(item, Fatal):
            with self._lock:
                self.state, self.message = FAILED, f"the backend failed to start: {item.message}"
            log.error("%s", self.message)

    def _end_sessions(self, error: str) -> None:
        """End every session still waiting for outputs with an error."""
        with self._lock:
            orphans = [s for s in self._sessions.values() if not s.finished]
        for session in orphans:
            session.finished = True
            session.outputs.put(Output(session.id, "", finish_reason=FINISH_ERROR, error=error))

    def _check_alive(self, force_dead: bool = False) -> None:
        """Notice a dead or silent backend: end its sessions and start a fresh process."""
        if self.state in (FAILED, STOPPED):
            return
        now = time.monotonic()
        silent = self.state == READY and now - self.last_beat > self.config.heartbeat_timeout_s
        stuck = self.state == LOADING and now - self.started_at > self.config.backend_start_timeout_s
        if not (force_dead or silent or stuck or not self.process.is_alive()):
            return
        reason = ("exited with code %s" % self.process.exitcode if not self.process.is_alive()
                  else "stopped answering")
        log.error("backend process %s %s; restarting it", self.process.pid, reason)
        with self._lock:
            self.state, self.message = DEAD, f"the backend {reason}; restarting"
        self._end_sessions(f"the backend {reason}")
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.restarts += 1
        with self._lock:
            self._start_process()
            self.last_beat = time.monotonic()
            self.state, self.message = LOADING, "the backend is restarting"
