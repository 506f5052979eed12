"""The step loop: admit, run one forward, turn new tokens into text, finish what is done."""
from __future__ import annotations

from .detokenize import StopMatcher
from .protocol import (FINISH_CANCELLED, FINISH_EOS, FINISH_ERROR, FINISH_LENGTH, FINISH_STOP,
                       Output, Submit)
from .scheduler import Scheduler
from .sequence import Sequence


class Engine:
    """Continuous batching over a runner (the real model or the mock) that turns plans into tokens."""

    def __init__(self, runner, max_rows: int, prefill_budget: int, max_seq_len: int):
        self.runner = runner
        self.max_seq_len = max_seq_len
        self.scheduler = Scheduler(max_rows, prefill_budget)

    @property
    def busy_rows(self) -> int:
        """Rows holding a request."""
        return self.scheduler.busy_rows

    @property
    def queued(self) -> int:
        """Prompts waiting for a row."""
        return len(self.scheduler.waiting)

    def has_work(self) -> bool:
        """True when step() would do something."""
        return self.scheduler.has_work()

    def add(self, submit: Submit) -> list[Output]:
        """Queue a prompt; a prompt that cannot fit is refused at once with an error Output."""
        n_prompt, max_tokens = len(submit.prompt_ids), submit.params.max_tokens
        problem = None
        if n_prompt == 0:
            problem = "the prompt is empty"
        elif n_prompt + max_tokens > self.max_seq_len:
            problem = (f"prompt of {n_prompt} tokens plus max_tokens {max_tokens} exceeds "
                       f"the context of {self.max_seq_len} tokens")
        if problem:
            return [Output(submit.session_id, "", finish_reason=FINISH_ERROR, error=problem,
                           prompt_tokens=n_prompt)]
        self.scheduler.add(Sequence(submit.session_id, list(submit.prompt_ids), submit.params,
                                    prompt_text=submit.prompt_text))
        return []

    def cancel(self, session_id: str) -> list[Output]:
        """Drop a session, waiting or running; its row is free for the next step."""
        seq = self.scheduler.remove(session_id)
        if seq is None:
            return []
        if seq.row is not None:
            self.runner.finish(seq)
        return [self._final(seq, "", FINISH_CANCELLED)]

    def fail_all(self, message: str) -> list[Output]:
        """End every session with an error (after a step raised), leaving the engine empty."""
        outputs = []
        for seq in self.scheduler.drain():
            if seq.row is not None:
                self.runner.finish(seq)
            outputs.append(self._final(seq, "", FINISH_ERROR, error=message))
        return outputs

    def step(self) -> list[Output]:
        """Admit waiting prompts, run one forward over all rows, and emit the new text."""
        outputs = []
        for seq in self.scheduler.admit():
            seq.state = _TextState(StopMatcher(tuple(seq.params.stop)))
            try:
                self.runner.start(seq)
            except ValueError as exc:  # this request cannot run here; the others go on
                self.scheduler.release(seq)
                self.runner.finish(seq)
                outputs.append(self._final(seq, "", FINISH_ERROR, error=str(exc)))
        plan = self.scheduler.plan()
        if not plan:
            return outputs
        sampled = self.runner.run(plan)
        for seq in plan.decode:
            seq.num_cached += 1
        for chunk in plan.prefill:
            chunk.seq.num_cached += chunk.length
        for seq, token in sampled:
            out = self._advance(seq, token)
            if out is not None:
                outputs.append(out)
        return outputs

    def _advance(self, seq: Sequence, token: int) -> Output | None:
        """Add one token to a sequence; returns its Output when there is text or it finished."""
        state = seq.state
        seq.generated.append(token)
        state.pending_tokens += 1
        finish = None
        if self.runner.is_eos(seq, token):
            text, finish = "", FINISH_EOS
        else:
            text, stopped = state.stops.push(self.runner.detokenize(seq, token))
            if stopped:
                finish = FINISH_STOP
        if finish is None and (len(seq.generated) >= seq.params.max_tokens
                               or seq.num_prompt + len(seq.generated) >= self.max_seq_len):
            finish = FINISH_LENGTH
        if finish in (FINISH_EOS, FINISH_LENGTH):
            text += state.stops.flush()
        if not state.started:
            state.started = True
            if seq.params.return_prompt:
                text = seq.prompt_text + text
        if finish is not None:
            self.scheduler.release(seq)
            self.runner.finish(seq)
            return self._final(seq, text, finish)
        if not text:
            return None  # held back: half a character or the start of a stop string
        return self._output(seq, text)

    def _output(self, seq: Sequence, text: str, **extra) -> Output:
        state = seq.state
        out = Output(seq.session_id, text, num_tokens=state.pending_tokens if state else 0,
                     prompt_tokens=seq.num_prompt, completion_tokens=len(seq.generated), **extra)
        if state is not None:
            if not state.reported_queue and seq.admitted_at is not None:
                out.queue_seconds = seq.admitted_at - seq.arrival
                state.reported_queue = True
            state.pending_tokens = 0
        return out

    def _final(self, seq: Sequence, text: str, finish: str, error: str | None = None) -> Output:
        return self._output(seq, text, finish_reason=finish, error=error)


class _TextState:
    """Per-sequence text bookkeeping of the engine."""

    def __init__(self, stops: StopMatcher):
        self.stops = stops
        self.pending_tokens = 0
        self.started = False
        self.reported_queue = False
