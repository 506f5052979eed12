"""The decode-backend process: load the model, then admit, step and emit until told to stop."""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time

from inference_api.config import Config
from inference_api.engine.core import Engine
from inference_api.process_messages import Cancel, Fatal, Heartbeat, Output, Ready, Shutdown, Submit

from .build import build_engine, warm_up

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5
PARENT_CHECK_SECONDS = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """End this process soon after the server process is gone, however it died.

    A SIGKILLed server runs no clean-up, and an orphaned backend would keep its cores busy.
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        log.error("the server process %s is gone; the backend exits", parent_pid)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def backend_main(config: Config, inputs, outputs) -> None:
    """Entry point of the backend process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s backend %(levelname)s %(message)s")
    exit_with_parent(multiprocessing.parent_process().pid)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
    # Ctrl-C reaches the whole process group; the server decides when the backend stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine, info = build_engine(config)
        warm_up(engine)
    except Exception as exc:  # noqa: BLE001 - every start failure becomes one clear line
        # Our own start errors (model not found, unsupported architecture) say it all already.
        known = isinstance(exc, (ValueError, RuntimeError))
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        log.error("backend cannot start: %s", message)
        outputs.put(Fatal(message))
        return
    outputs.put(Ready(info))
    serve(engine, inputs, outputs)


def serve(engine: Engine, inputs, outputs) -> None:
    """The loop: take messages (blocking only when idle), step, emit, beat."""
    last_beat = 0.0
    while True:
        results: list[Output] = []
        for message in take_messages(inputs, block=not engine.has_work()):
            if isinstance(message, Submit):
                results += engine.add(message)
            elif isinstance(message, Cancel):
                results += engine.cancel(message.session_id)
            elif isinstance(message, Shutdown):
                results += engine.fail_all("the server is shutting down", retry_after=5)
                outputs.put(results)
                return
        try:
            results += engine.step()
        except Exception as exc:  # noqa: BLE001 - a failed step must end its sessions, not hang them
            log.exception("decode step failed")
            results += engine.fail_all(f"backend step failed: {type(exc).__name__}: {exc}")
        if results:
            outputs.put(results)
        now = time.monotonic()
        if now - last_beat >= HEARTBEAT_SECONDS:
            outputs.put(Heartbeat(engine.busy_rows, engine.queued, engine.cached_rows,
                                  engine.row_faults()))
            last_beat = now


def take_messages(inputs, block: bool) -> list:
    """Everything waiting on the input queue; waits up to a heartbeat for the first when idle."""
    messages = []
    try:
        messages.append(inputs.get(timeout=HEARTBEAT_SECONDS) if block else inputs.get_nowait())
        while True:
            messages.append(inputs.get_nowait())
    except queue.Empty:
        pass
    return messages


def start_backend(config: Config):
    """Spawn the backend process; returns (process, input queue, output queue)."""
    ctx = multiprocessing.get_context("spawn")
    inputs, outputs = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=backend_main, args=(config, inputs, outputs), name="decode-backend",
                          daemon=True)
    process.start()
    return process, inputs, outputs
