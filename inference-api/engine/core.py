"""The step loop: admit, run one forward, turn new tokens into text, finish what is done."""
from __future__ import annotations

import time
from typing import Protocol

from inference_api.process_messages import (FINISH_CANCELLED, FINISH_EOS, FINISH_ERROR,
                                            FINISH_LENGTH, FINISH_STOP, Output, Submit,
                                            TokenLogprob)
from inference_api.sampling_params import check_context

from .scheduler import Scheduler
from .sequence import NewToken, Sequence
from .step_budget import FixedBudget, StepBudget
from .step_plan import StepPlan
from .text_state import TextMaker


class Runner(Protocol):
    """What the engine needs of a model: rows prepared and forgotten, plans turned into tokens."""

    max_seq_len: int

    def start(self, seq: Sequence) -> None:
        """Prepare a newly admitted row; ValueError refuses this request alone."""

    def finish(self, seq: Sequence) -> None:
        """Forget a row's per-request state."""

    def run(self, plan: StepPlan) -> list[NewToken]:
        """The plan's copies between rows, then one forward: a new token for every row that
        has one."""


class Engine:
    """Continuous batching: the scheduler plans each step, a runner (model or mock) runs it."""

    def __init__(self, runner: Runner, texts: TextMaker, max_rows: int,
                 budget: StepBudget | FixedBudget, max_seq_len: int, prefix_caching: bool = True):
        self.runner = runner
        self.texts = texts
        self.max_seq_len = max_seq_len
        self.budget = budget
        self.scheduler = Scheduler(max_rows, budget, prefix_caching)

    @property
    def busy_rows(self) -> int:
        """Rows holding a request."""
        return self.scheduler.busy_rows

    @property
    def queued(self) -> int:
        """Prompts waiting for a row."""
        return len(self.scheduler.waiting)

    @property
    def cached_rows(self) -> int:
        """Free rows whose cache is kept for prefix reuse."""
        return len(self.scheduler.contents.kept)

    def row_faults(self) -> list[str]:
        """The rows' bookkeeping faults; empty when it is sound."""
        return self.scheduler.accounting_faults()

    def has_work(self) -> bool:
        """True when step() would do something."""
        return self.scheduler.has_work()

    def add(self, submit: Submit) -> list[Output]:
        """Queue a prompt; a prompt that cannot fit is refused at once with an error Output."""
        try:
            if not submit.prompt_ids:
                raise ValueError("the prompt is empty")
            check_context(len(submit.prompt_ids), submit.params.max_tokens, self.max_seq_len)
        except ValueError as exc:
            return [Output(submit.session_id, "", finish_reason=FINISH_ERROR, error=str(exc),
                           refused=True)]
        self.scheduler.add(Sequence(submit.session_id, list(submit.prompt_ids), submit.params,
                                    prompt_text=submit.prompt_text, adapter=submit.adapter))
        return []

    def cancel(self, session_id: str) -> list[Output]:
        """Drop a session, waiting or running; its row is free for the next step."""
        seq = self.scheduler.remove(session_id)
        if seq is None:
            return []
        if seq.row is not None:
            self.runner.finish(seq)
        return [self._final(seq, "", FINISH_CANCELLED)]

    def fail_all(self, message: str, retry_after: int | None = None) -> list[Output]:
        """End every session with an error, leaving the engine empty.

        retry_after: the sessions did nothing wrong (the server is stopping) and may be sent
        again after so many seconds; None after a step raised.
        """
        outputs = []
        for seq in self.scheduler.drain():
            if seq.row is not None:
                self.runner.finish(seq)
            outputs.append(self._output(seq, "", finish_reason=FINISH_ERROR, error=message,
                                        retry_after=retry_after))
        return outputs

    def step(self) -> list[Output]:
        """Admit waiting prompts, run one forward over all rows, and emit the new text."""
        started = time.perf_counter()
        outputs = []
        for seq in self.scheduler.admit():
            seq.text = self.texts(seq)
            try:
                self.runner.start(seq)
            except ValueError as exc:  # this request cannot run here; the others go on
                self._finish(seq)
                outputs.append(self._final(seq, "", FINISH_ERROR, error=str(exc), refused=True))
        plan = self.scheduler.plan()
        if not plan:
            return outputs
        sampled = self.runner.run(plan)
        self.scheduler.advance(plan, sampled)
        for new in sampled:
            out = self._emit(new)
            if out is not None:
                outputs.append(out)
        self.budget.observe(len(plan.decode), sum(c.length for c in plan.prefill),
                            time.perf_counter() - started)
        return outputs

    def _emit(self, new: NewToken) -> Output | None:
        """A sequence's Output for its new token: when there is text, or when it finished."""
        seq = new.seq
        if new.error is not None:
            self._finish(seq)
            return self._final(seq, "", FINISH_ERROR, error=new.error)
        tokens = new.closing or (new.token,)
        if seq.params.max_tokens == 0:  # only the prompt's log probabilities were wanted
            seq.generated.clear()
            tokens = ()
        elif seq.params.logprobs is not None:
            # Tokens forced to complete a structured output had no choice: probability 1.
            seq.logprobs += [new.logprob] if not new.closing else [
                TokenLogprob(t, 0.0) for t in new.closing]
        text, finish = "", None
        for token in tokens:
            piece, finish = seq.text.push(token)
            text += piece
            if finish is not None:
                break
        if new.closing:  # a structured output completed as max_tokens runs out
            finish = finish or FINISH_LENGTH
        if finish is None and (len(seq.generated) >= seq.params.max_tokens
                               or seq.num_prompt + len(seq.generated) >= self.max_seq_len):
            finish = FINISH_LENGTH
        if finish in (FINISH_EOS, FINISH_LENGTH):
            text += seq.text.stops.flush()
        if not seq.text.started:
            seq.text.started = True
            if seq.params.return_prompt:
                text = seq.prompt_text + text
        if finish is not None:
            self._finish(seq)
            stop = seq.text.stops.matched if finish == FINISH_STOP else None
            return self._output(seq, text, finish_reason=finish, stop=stop)
        if not text:
            return None  # held back: half a character or the start of a stop string
        return self._output(seq, text)

    def _finish(self, seq: Sequence) -> None:
        self.scheduler.release(seq)
        self.runner.finish(seq)

    def _output(self, seq: Sequence, text: str, **extra) -> Output:
        state = seq.text
        out = Output(seq.session_id, text, num_tokens=state.pending_tokens if state else 0,
                     completion_tokens=len(seq.generated), **extra)
        if seq.params.logprobs is not None:
            out.logprobs, seq.logprobs = seq.logprobs, []
        if state is not None:
            if not state.reported_queue and seq.admitted_at is not None:
                out.queue_seconds = seq.admitted_at - seq.arrival
                out.cached_tokens = seq.num_reused
                out.prompt_logprobs = seq.prompt_logprobs
                state.reported_queue = True
            state.pending_tokens = 0
        return out

    def _final(self, seq: Sequence, text: str, finish: str, error: str | None = None,
               refused: bool = False) -> Output:
        return self._output(seq, text, finish_reason=finish, error=error, refused=refused)
