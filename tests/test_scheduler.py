"""The scheduler alone: admission order, row reuse and the per-step prefill budget."""
from inference_api.params import SamplingParams
from inference_api.scheduler import DECODE_ROW_COST, Scheduler
from inference_api.sequence import Sequence


def run_step(scheduler: Scheduler) -> tuple[list[str], dict[str, int]]:
    """StepPlan one step, give each ready row a token; returns (decoded ids, prefilled tokens)."""
    scheduler.admit()
    plan = scheduler.plan()
    ready = plan.decode + [c.seq for c in plan.prefill if c.completes_prompt]
    scheduler.advance(plan, [(seq, 1) for seq in ready])
    return [s.session_id for s in plan.decode], {c.seq.session_id: c.length for c in plan.prefill}


def add(scheduler: Scheduler, name: str, prompt_len: int) -> Sequence:
    seq = Sequence(name, list(range(prompt_len)), SamplingParams(max_tokens=8))
    scheduler.add(seq)
    return seq


def test_prompt_tokens_fill_the_places_of_rows_not_decoding():
    assert DECODE_ROW_COST == 2
    scheduler = Scheduler(max_rows=4, prefill_budget=8)
    add(scheduler, "a", 40)
    # No row decodes: 8 + 2 prompt tokens for each of 4 idle rows = 16 a step.
    assert run_step(scheduler) == ([], {"a": 16})
    assert run_step(scheduler) == ([], {"a": 16})
    assert run_step(scheduler) == ([], {"a": 8})  # the prompt's end; its first token comes out
    add(scheduler, "b", 40)
    # One row decodes: 8 + 2 for each of 3 idle rows.
    assert run_step(scheduler) == (["a"], {"b": 14})


def test_running_streams_never_wait_for_more_than_the_budget():
    scheduler = Scheduler(max_rows=4, prefill_budget=8)
    for name in "abc":
        add(scheduler, name, 2)
    run_step(scheduler)  # all three short prompts fit in one step
    add(scheduler, "long", 100)
    for _ in range(5):
        decoded, prefilled = run_step(scheduler)
        assert decoded == ["a", "b", "c"]
        assert sum(prefilled.values()) == 8 + 2  # one idle row's place besides the budget
        cost = DECODE_ROW_COST * len(decoded) + sum(prefilled.values())
        assert cost <= DECODE_ROW_COST * 4 + 8


def test_prompts_share_the_budget_oldest_first_and_wait_for_free_rows():
    scheduler = Scheduler(max_rows=2, prefill_budget=4)
    first = add(scheduler, "first", 5)
    add(scheduler, "second", 5)
    third = add(scheduler, "third", 1)
    assert run_step(scheduler) == ([], {"first": 5, "second": 3})
    assert third.row is None and list(scheduler.waiting) == [third]  # both rows are taken
    assert run_step(scheduler) == (["first"], {"second": 2})
    scheduler.release(first)
    assert run_step(scheduler) == (["second"], {"third": 1})
    assert third.row == first.row  # the freed row is reused at the next step
