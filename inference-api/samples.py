"""What the JSON routes share: params per sample, one session per sample, merged outputs, SSE."""
from __future__ import annotations

import json
import queue
import threading
from contextlib import closing
from dataclasses import dataclass
from typing import Iterator

from flask import Response, g, request

from .frontend import ApiError, Frontend, Record
from .params import SamplingParams
from .protocol import FINISH_CANCELLED, Output

MAX_SAMPLES = 8  # sessions one request may hold: each takes a row of its own


def sample_params(n: int, seed: int | None, **fields) -> list[SamplingParams]:
    """n SamplingParams; with a seed, sample i uses seed + i so that the samples differ."""
    try:
        return [SamplingParams(seed=None if seed is None else seed + i, **fields)
                for i in range(n)]
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@dataclass
class Sample:
    """One generation of a request: its session, its log record and what it produced."""

    session: object
    record: Record
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far."""
        return self.record.completion_tokens


def open_samples(frontend: Frontend, jobs: list[tuple[list[int], SamplingParams, str]]
                 ) -> list[Sample]:
    """Open a session per (prompt ids, params, prompt text); all of them or none (then a 503)."""
    samples: list[Sample] = []
    try:
        for prompt_ids, params, prompt_text in jobs:
            session = frontend.open(prompt_ids, params, prompt_text)
            samples.append(Sample(session, Record(g.request_id, request.path,
                                                  prompt_tokens=len(prompt_ids))))
    except ApiError:
        for sample in samples:
            frontend.link.close_session(sample.session)
        raise
    return samples


def merged_outputs(frontend: Frontend, samples: list[Sample], environ: dict
                   ) -> Iterator[tuple[int, list[Output]]]:
    """(sample index, batch) as each sample's batches come, through Frontend.outputs.

    Updates each Sample's text and finish. One sample is read in this thread; several are read
    by a thread each (Frontend.outputs blocks on one session), merged into one queue.
    """
    if len(samples) == 1:
        outputs = frontend.outputs(samples[0].session, samples[0].record, environ)
        try:
            for batch in outputs:
                yield 0, _note(samples[0], batch)
        finally:
            outputs.close()
        return
    merged: queue.Queue = queue.Queue()

    def pump(index: int):
        try:
            for batch in frontend.outputs(samples[index].session, samples[index].record, environ):
                merged.put((index, batch))
        finally:
            merged.put((index, None))

    running = set(range(len(samples)))
    for index in running:
        threading.Thread(target=pump, args=(index,), name=f"sample-{index}", daemon=True).start()
    try:
        while running:
            index, batch = merged.get()
            if batch is None:
                running.discard(index)
            else:
                yield index, _note(samples[index], batch)
    finally:
        for index in running:  # the client left or the caller stopped early: end the rest
            session = samples[index].session
            frontend.link.close_session(session)
            session.finished = True
            # Frontend.outputs of that sample ends on this, as on the backend's own final output.
            session.outputs.put(Output(session.id, "", finish_reason=FINISH_CANCELLED))


def _note(sample: Sample, batch: list[Output]) -> list[Output]:
    sample.text += "".join(o.text for o in batch)
    if batch[-1].finish_reason is not None:
        sample.finish_reason, sample.error = batch[-1].finish_reason, batch[-1].error
    return batch


def text_batches(frontend: Frontend, samples: list[Sample], environ: dict
                 ) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(sample index, new text, finish reason, error) per batch, for streamed answers.

    Ends quietly when the client has left; the caller ends its stream after an error.
    """
    with closing(merged_outputs(frontend, samples, environ)) as outputs:
        for index, batch in outputs:
            last = batch[-1]
            if last.finish_reason == FINISH_CANCELLED:
                return
            yield index, "".join(o.text for o in batch), last.finish_reason, last.error


def run_to_end(frontend: Frontend, samples: list[Sample], environ: dict) -> list[Sample]:
    """Wait for every sample to finish (for answers sent in one piece)."""
    for _ in merged_outputs(frontend, samples, environ):
        pass
    return samples


def sse_event(payload) -> bytes:
    """One server-sent event carrying a JSON object (or a bare word such as [DONE])."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False,
                                                               separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def sse_response(events: Iterator[bytes]) -> Response:
    """A streamed text/event-stream answer; each event goes out as soon as it is made."""
    from flask import stream_with_context

    def body():
        yield b""  # sends the headers now, even while the prompt waits for a row
        yield from events

    return Response(stream_with_context(body()), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
