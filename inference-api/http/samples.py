"""What the JSON routes share: the samples of one request, collected whole or streamed as SSE."""
from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, field
from typing import Iterator

from flask import Response, g, request, stream_with_context

from inference_api.process_messages import FINISH_CANCELLED, FINISH_ERROR, TokenLogprob
from inference_api.sampling_params import SamplingParams
from inference_api.serving.backend_link import Job
from inference_api.serving.engine_client import EngineClient, Generations, Record

from .errors import ApiError, error_payload
from .plumbing import client_gone


def sample_params(n: int, seed: int | None, **fields) -> list[SamplingParams]:
    """n SamplingParams; with a seed, sample i uses seed + i so that the samples differ."""
    try:
        return [SamplingParams(seed=None if seed is None else seed + i, **fields)
                for i in range(n)]
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@dataclass
class Sample:
    """One generation of a request as its answer shows it: text so far and how it ended."""

    record: Record
    text: str = ""
    finish_reason: str | None = None
    stop: str | None = None  # the stop string that ended it, when one did
    error: str | None = None
    refused: bool = False  # the backend refused the request as given
    retry_after: int | None = None  # the generation was cut by no fault of its own
    logprobs: list[TokenLogprob] = field(default_factory=list)  # every token's, when asked for
    prompt_logprobs: list[TokenLogprob | None] | None = None
    fresh_logprobs: list[TokenLogprob] = field(default_factory=list)  # of the latest batch

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far."""
        return self.record.completion_tokens


@dataclass
class Answer:
    """An open request and its samples, in the order of its jobs."""

    generations: Generations
    samples: list[Sample]


def open_answer(engine: EngineClient, jobs: list[Job]) -> Answer:
    """Send every job to the backend at once, or none of them (then a 503).

    Each job takes a row of its own, so a request may not hold more than the server has.
    """
    rows = engine.config.max_users
    if len(jobs) > rows:
        raise ApiError(400, f"the request asks for {len(jobs)} generations (prompts times n), "
                            f"over the {rows} this server runs at once", param="n")
    generations = engine.open(jobs, g.request_id, request.path)
    return Answer(generations, [Sample(record) for record in generations.records])


def text_batches(engine: EngineClient, answer: Answer
                 ) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(sample index, new text, finish reason, error) per batch, updating the samples.

    Ends quietly when the client has left; the caller ends its stream after an error.
    """
    with closing(engine.batches(answer.generations, client_gone)) as batches:
        for index, batch in batches:
            sample, last = answer.samples[index], batch[-1]
            text = "".join(o.text for o in batch)
            sample.text += text
            sample.fresh_logprobs = [lp for o in batch for lp in o.logprobs or ()]
            sample.logprobs += sample.fresh_logprobs
            if batch[0].prompt_logprobs is not None:
                sample.prompt_logprobs = batch[0].prompt_logprobs
            if last.finish_reason is not None:
                sample.finish_reason, sample.error = last.finish_reason, last.error
                sample.stop = last.stop
                sample.refused, sample.retry_after = last.refused, last.retry_after
            if last.finish_reason == FINISH_CANCELLED:
                return
            yield index, text, last.finish_reason, last.error


def run_to_end(engine: EngineClient, answer: Answer) -> list[Sample]:
    """Every sample, finished (for answers sent in one piece); an error answer if one failed."""
    for _ in text_batches(engine, answer):
        pass
    failed = next((s for s in answer.samples if s.finish_reason == FINISH_ERROR), None)
    if failed is not None and failed.refused:
        raise ApiError(400, failed.error)
    if failed is not None and failed.retry_after is not None:
        # The backend died or the server is stopping: the same request can succeed later.
        raise ApiError(503, f"the generation was interrupted: {failed.error}",
                       {"Retry-After": str(failed.retry_after)}, code="unavailable")
    if failed is not None:
        raise ApiError(500, f"the generation failed: {failed.error}", code="generation_failed")
    return answer.samples


def failure_event(sample: Sample) -> bytes:
    """The event that ends a stream whose generation failed, in the route's error shape.

    No [DONE] or summary follows it, so a client that skips unknown events still sees a cut.
    A generation interrupted by no fault of its own says 503 and when to retry.
    """
    if sample.retry_after is not None:
        payload = error_payload(503, f"the generation was interrupted: {sample.error}",
                                code="unavailable")
        return sse_event({**payload, "retry_after": sample.retry_after})
    return sse_event(error_payload(500, f"the generation failed: {sample.error}",
                                   code="generation_failed"))


def sse_event(payload, name: str | None = None) -> bytes:
    """One server-sent event carrying a JSON object (or a bare word such as [DONE]), named when
    the API names its events (Responses, Messages)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False,
                                                               separators=(",", ":"))
    return (f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode()


def sse_response(events: Iterator[bytes]) -> Response:
    """A streamed text/event-stream answer; each event goes out as soon as it is made."""

    def body():
        yield b""  # sends the headers now, even while the prompt waits for a row
        yield from events

    return Response(stream_with_context(body()), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
