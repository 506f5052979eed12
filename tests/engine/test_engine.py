"""The engine's logic on the mock runner: admission, finishing, cancel, stops and failures."""
from __future__ import annotations

import queue
import threading

from inference_api.backend.process import serve
from inference_api.config import Config
from inference_api.engine.core import Engine
from inference_api.engine.step_budget import FixedBudget
from inference_api.mock.runner import MockRunner
from inference_api.mock.text import MockDetokenizer, mock_answer
from inference_api.sampling_params import SamplingParams
from inference_api.process_messages import Output, Shutdown, Submit
from inference_api.engine.text_state import TextMaker

MAX_SEQ_LEN = 64


def make_engine(runner=None, rows: int = 4, prefill_budget: int = 8) -> Engine:
    """An engine on the mock runner with no pause per step."""
    runner = runner or MockRunner(Config(mock_step_ms=0, max_seq_len=MAX_SEQ_LEN))
    return Engine(runner, TextMaker(MockDetokenizer), rows, FixedBudget(prefill_budget),
                  MAX_SEQ_LEN)


def submit(name: str, max_tokens: int, prompt: str = "a b c", **params) -> Submit:
    ids = list(range(len(prompt.split())))
    return Submit(name, ids, SamplingParams(max_tokens=max_tokens, **params), prompt)


def run(engine: Engine, *submits: Submit) -> dict[str, list[Output]]:
    """Add the submits, step until the engine is idle; returns each session's outputs."""
    results: dict[str, list[Output]] = {}
    for s in submits:
        for out in engine.add(s):
            results.setdefault(out.session_id, []).append(out)
    for _ in range(10_000):
        if not engine.has_work():
            return results
        for out in engine.step():
            results.setdefault(out.session_id, []).append(out)
    raise AssertionError("engine did not finish")


def text_of(outputs: list[Output]) -> str:
    return "".join(o.text for o in outputs)


def test_more_requests_than_rows_all_finish_with_their_own_text():
    engine = make_engine(rows=4)
    submits = [submit(f"r{i}", 3 + i % 4, prompt=f"p{i} q{i}") for i in range(10)]
    for s in submits:
        engine.add(s)
    first = engine.step()
    assert engine.busy_rows == 4 and engine.queued == 6
    results = run(engine)
    for out in first:
        results[out.session_id].insert(0, out)
    for s in submits:
        outs = results[s.session_id]
        assert text_of(outs) == mock_answer(s.prompt_text, s.params.max_tokens)
        assert outs[-1].finish_reason == "length"
        assert outs[-1].completion_tokens == sum(o.num_tokens for o in outs) == s.params.max_tokens
    assert engine.busy_rows == 0


def test_cancel_frees_the_row_for_the_next_prompt():
    engine = make_engine(rows=1)
    engine.add(submit("long", 50))
    engine.add(submit("next", 2))
    engine.step()
    engine.step()
    assert engine.busy_rows == 1 and engine.queued == 1
    outs = engine.cancel("long")
    assert [o.finish_reason for o in outs] == ["cancelled"]
    assert engine.cancel("long") == []  # cancelling twice is harmless
    assert run(engine)["next"][-1].finish_reason == "length"
    assert not engine.has_work()


def test_cancel_of_a_waiting_prompt_never_runs_it():
    engine = make_engine(rows=1)
    engine.add(submit("running", 5))
    engine.add(submit("waiting", 5))
    engine.step()
    assert engine.cancel("waiting")[0].finish_reason == "cancelled"
    assert set(run(engine)) == {"running"}


def test_stop_string_across_tokens_is_cut_and_never_sent():
    full = mock_answer("a b c", 6)  # "a0 b1 c2 a3 b4 c5 "
    outs = run(make_engine(), submit("s", 6, stop=("2 a",)))["s"]
    assert text_of(outs) == full[:full.index("2 a")]
    assert outs[-1].finish_reason == "stop"


def test_request_eos_ids_end_the_answer_and_ignore_eos_does_not():
    # The mock's token is its position in the answer: id 2 is the third token.
    outs = run(make_engine(), submit("e", 10, eos_token_ids=(2,)))["e"]
    assert outs[-1].finish_reason == "eos" and outs[-1].completion_tokens == 3
    assert text_of(outs) == mock_answer("a b c", 2)
    outs = run(make_engine(), submit("i", 5, eos_token_ids=(2,), ignore_eos=True))["i"]
    assert outs[-1].finish_reason == "length" and text_of(outs) == mock_answer("a b c", 5)


def test_return_prompt_comes_first():
    outs = run(make_engine(), submit("p", 2, return_prompt=True))["p"]
    assert text_of(outs) == "a b c" + mock_answer("a b c", 2)


def test_the_context_ends_an_answer_as_length():
    engine = make_engine()
    prompt = " ".join(["w"] * (MAX_SEQ_LEN - 4))
    outs = run(engine, submit("c", 4, prompt=prompt))["c"]
    assert outs[-1].finish_reason == "length" and outs[-1].completion_tokens == 4


def test_prompt_too_long_or_empty_is_refused_not_truncated():
    engine = make_engine()
    outs = engine.add(submit("big", 10, prompt=" ".join(["w"] * 60)))
    assert outs[0].finish_reason == "error"
    assert "60" in outs[0].error and str(MAX_SEQ_LEN) in outs[0].error
    assert engine.add(Submit("empty", [], SamplingParams()))[0].error == "the prompt is empty"
    assert not engine.has_work()


class RefusingRunner(MockRunner):
    """A runner that cannot serve prompts starting with token 666 (as a bad EOS id, say)."""

    def start(self, seq):
        if seq.prompt_ids[0] == 666:
            raise ValueError("cannot run this one")


def test_a_request_the_runner_refuses_fails_alone():
    engine = make_engine(RefusingRunner(Config(mock_step_ms=0, max_seq_len=MAX_SEQ_LEN)))
    bad = Submit("bad", [666, 1], SamplingParams(max_tokens=3), "x y")
    results = run(engine, submit("good", 3), bad)
    assert results["bad"][-1].finish_reason == "error" and "cannot run" in results["bad"][-1].error
    assert results["good"][-1].finish_reason == "length"
    assert engine.busy_rows == 0


class BrokenRunner(MockRunner):
    """A runner whose forward raises when a poisoned prompt is in the step."""

    def run(self, plan):
        if any(c.seq.prompt_ids[0] == 666 for c in plan.prefill):
            raise RuntimeError("simulated device failure")
        return super().run(plan)


def test_a_failing_step_ends_every_session_with_an_error_and_serving_goes_on():
    engine = make_engine(BrokenRunner(Config(mock_step_ms=1, max_seq_len=MAX_SEQ_LEN)))
    inputs, outputs = queue.Queue(), queue.Queue()
    loop = threading.Thread(target=serve, args=(engine, inputs, outputs))
    loop.start()
    try:
        for i in range(3):
            inputs.put(submit(f"x{i}", 50))
        inputs.put(Submit("poison", [666, 2], SamplingParams(max_tokens=5), "p q"))
        finals = finals_of(outputs, 4)
        assert all(o.finish_reason == "error" and "simulated" in o.error for o in finals.values())
        inputs.put(submit("after", 3))
        assert finals_of(outputs, 1)["after"].finish_reason == "length"
    finally:
        inputs.put(Shutdown())
        loop.join(30)
    assert not loop.is_alive()


def finals_of(outputs: queue.Queue, count: int) -> dict[str, Output]:
    """The next `count` final Outputs from the backend's output queue, by session."""
    finals = {}
    while len(finals) < count:
        message = outputs.get(timeout=60)
        for out in message if isinstance(message, list) else []:
            if isinstance(out, Output) and out.finish_reason:
                finals[out.session_id] = out
    return finals
