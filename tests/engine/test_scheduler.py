"""The scheduler alone: admission order, row reuse, prefix reuse and the per-step prompt budget."""
from inference_api.sampling_params import SamplingParams
from inference_api.engine.prefix_cache import MIN_COPY_TOKENS, shared_prefix
from inference_api.engine.scheduler import Scheduler
from inference_api.engine.step_plan import RowCopy, StepPlan
from inference_api.engine.sequence import NewToken, Sequence
from inference_api.engine.step_budget import FixedBudget


def run_step(scheduler: Scheduler) -> tuple[list[str], dict[str, int]]:
    """StepPlan one step, give each ready row a token; returns (decoded ids, prefilled tokens)."""
    plan = plan_step(scheduler)
    return [s.session_id for s in plan.decode], {c.seq.session_id: c.length for c in plan.prefill}


def plan_step(scheduler: Scheduler) -> StepPlan:
    """Admit, plan and advance one step as the engine does; returns the plan."""
    scheduler.admit()
    plan = scheduler.plan()
    ready = plan.decode + [c.seq for c in plan.prefill if c.completes_prompt]
    scheduler.advance(plan, [NewToken(seq, 1) for seq in ready])
    return plan


def add(scheduler: Scheduler, name: str, prompt: int | list[int],
        adapter: str | None = None) -> Sequence:
    ids = list(range(prompt)) if isinstance(prompt, int) else prompt
    seq = Sequence(name, ids, SamplingParams(max_tokens=8), adapter=adapter)
    scheduler.add(seq)
    return seq


class RowsBudget:
    """A budget that gives 40 prompt tokens less 10 per decoding row, and records its calls."""

    def __init__(self):
        self.asked = []

    def tokens(self, decode_rows: int) -> int:
        self.asked.append(decode_rows)
        return max(1, 40 - 10 * decode_rows)


def test_each_step_takes_the_prompt_tokens_the_budget_gives_for_its_decoding_rows():
    budget = RowsBudget()
    scheduler = Scheduler(max_rows=4, budget=budget, prefix_caching=False)
    add(scheduler, "a", 100)
    assert run_step(scheduler) == ([], {"a": 40})
    assert run_step(scheduler) == ([], {"a": 40})
    assert run_step(scheduler) == ([], {"a": 20})  # the prompt's end; its first token comes out
    add(scheduler, "b", 100)
    assert run_step(scheduler) == (["a"], {"b": 30})
    add(scheduler, "c", 100)
    assert run_step(scheduler) == (["a"], {"b": 30})  # oldest first: c waits for b's share
    assert budget.asked == [0, 0, 0, 1, 1]
    while any(seq.prefilling for seq in scheduler.running.values()):
        run_step(scheduler)
    asked = len(budget.asked)
    assert run_step(scheduler) == (["a", "b", "c"], {})
    assert len(budget.asked) == asked  # a step with no prompt to place does not ask


def test_running_streams_never_wait_for_more_than_the_budget():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(8))
    for name in "abc":
        add(scheduler, name, 2)
    run_step(scheduler)  # all three short prompts fit in one step
    add(scheduler, "long", 100)
    for _ in range(5):
        decoded, prefilled = run_step(scheduler)
        assert decoded == ["a", "b", "c"]
        assert sum(prefilled.values()) == 8


def test_prompts_share_the_budget_oldest_first_and_wait_for_free_rows():
    scheduler = Scheduler(max_rows=2, budget=FixedBudget(8))
    first = add(scheduler, "first", 5)
    add(scheduler, "second", 5)
    third = add(scheduler, "third", [7])
    assert run_step(scheduler) == ([], {"first": 5, "second": 3})
    assert third.row is None and list(scheduler.waiting) == [third]  # both rows are taken
    assert run_step(scheduler) == (["first"], {"second": 2})
    scheduler.release(first)
    assert run_step(scheduler) == (["second"], {"third": 1})
    assert third.row == first.row  # the freed row is reused at the next step


def test_shared_prefix_is_the_longest_common_start():
    assert shared_prefix([1, 2, 3, 4], [1, 2, 3, 4]) == 4
    assert shared_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert shared_prefix([1, 2], [1, 2, 3]) == 2
    assert shared_prefix([5], [1]) == 0
    assert shared_prefix([], [1]) == 0
    long = list(range(1000))
    assert shared_prefix(long, long[:637] + [-1] + long[638:]) == 637


def finish(scheduler: Scheduler, seq: Sequence) -> None:
    """Run until seq has its prompt in the cache and one decode step, then free its row."""
    while seq.prefilling:
        run_step(scheduler)
    run_step(scheduler)
    scheduler.release(seq)


def test_a_prompt_starting_like_a_finished_one_takes_its_row_and_skips_the_shared_start():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(64))
    system = list(range(100, 130))
    first = add(scheduler, "first", system + [1, 2, 3])
    finish(scheduler, first)
    assert first.num_reused == 0
    assert scheduler.contents.kept[first.row] == first.prompt_ids + [1]  # prompt, first token
    second = add(scheduler, "second", system + [7, 8])
    assert run_step(scheduler) == ([], {"second": 2})  # only what differs is prefilled
    assert (second.row, second.num_reused, second.copy_from) == (first.row, 30, None)


def test_a_repeated_prompt_still_prefills_its_last_token_for_the_first_logits():
    scheduler = Scheduler(max_rows=2, budget=FixedBudget(64))
    first = add(scheduler, "first", list(range(50)))
    finish(scheduler, first)
    again = add(scheduler, "again", list(range(50)))
    assert run_step(scheduler) == ([], {"again": 1})
    assert again.num_reused == 49


def test_a_follow_up_turn_reuses_the_previous_answer_too():
    scheduler = Scheduler(max_rows=2, budget=FixedBudget(64))
    turn = add(scheduler, "turn", list(range(20)))
    finish(scheduler, turn)  # generated [1, 1]; the cache holds the prompt and the first one
    follow_up = add(scheduler, "follow-up", list(range(20)) + [1, 1, 500, 501])
    run_step(scheduler)
    assert follow_up.num_reused == 21


def test_a_prompt_sharing_a_start_with_a_running_row_copies_it():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(64))
    document = list(range(1000, 1060))
    reader = add(scheduler, "reader", document + [1])
    run_step(scheduler)  # all 61 tokens in the cache; reader decodes from now on
    other = add(scheduler, "other", document + [2, 3])
    plan = plan_step(scheduler)
    assert plan.copies == [RowCopy(reader.row, other.row, 60)] and other.row != reader.row
    assert [s.session_id for s in plan.decode] == ["reader"]
    assert [(c.seq.session_id, c.start, c.length) for c in plan.prefill] == [("other", 60, 2)]
    assert other.num_reused == 60


def test_prompts_arriving_together_wait_for_their_shared_start_and_copy_it():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(16))
    system = list(range(500, 540))  # 40 tokens that every prompt starts with
    first = add(scheduler, "first", system + [1, 2])
    second = add(scheduler, "second", system + [3, 4, 5])
    third = add(scheduler, "third", system + [6])
    steps = [plan_step(scheduler) for _ in range(3)]
    # The first prompt's start goes in 16 tokens a step; the others wait instead of computing it.
    assert [[(c.seq.session_id, c.length) for c in p.prefill] for p in steps] == \
        [[("first", 16)], [("first", 16)], [("first", 10)]]
    assert all(not p.copies for p in steps)
    plan = plan_step(scheduler)  # the first's 42 tokens are cached: both copy the 40 shared
    assert plan.copies == [RowCopy(first.row, second.row, 40), RowCopy(first.row, third.row, 40)]
    assert [(c.seq.session_id, c.start, c.length) for c in plan.prefill] == \
        [("second", 40, 3), ("third", 40, 1)]
    assert second.num_reused == third.num_reused == 40


def test_prefixes_are_reused_only_between_requests_of_the_same_adapter():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(64))
    system = list(range(100, 130))
    tuned = add(scheduler, "tuned", system + [1], adapter="tune1")
    finish(scheduler, tuned)
    # The same start under the base model or another adapter: its keys and values differ.
    others = [add(scheduler, name, system + [2], adapter=adapter)
              for name, adapter in (("base", None), ("other", "tune2"))]
    run_step(scheduler)
    for seq in others:
        assert seq.num_reused == 0 and seq.row != tuned.row and seq.copy_from is None
    again = add(scheduler, "again", system + [3], adapter="tune1")
    run_step(scheduler)
    assert (again.row, again.num_reused) == (tuned.row, 30)
    # Busy rows of the base model and of tune1 hold the same start: it is copied from tune2's.
    reader = add(scheduler, "reader", system + [4], adapter="tune2")
    plan = plan_step(scheduler)
    assert plan.copies == [RowCopy(others[1].row, reader.row, 30)] and reader.num_reused == 30


def test_a_copy_whose_source_leaves_first_is_given_up():
    scheduler = Scheduler(max_rows=3, budget=FixedBudget(8))
    first = add(scheduler, "first", list(range(30)))
    second = add(scheduler, "second", list(range(30)) + [99])
    plan_step(scheduler)
    scheduler.release(first)  # cancelled with 8 of its tokens in the cache
    plan = plan_step(scheduler)
    assert not plan.copies
    assert [(c.seq.session_id, c.start) for c in plan.prefill] == [("second", 0)]
    assert second.copy_from is None and second.num_reused == 0


def test_a_copy_is_planned_only_when_it_saves_enough_over_what_the_taken_row_holds():
    for extra, copies in ((MIN_COPY_TOKENS - 1, False), (MIN_COPY_TOKENS, True)):
        scheduler = Scheduler(max_rows=3, budget=FixedBudget(128))
        base, more = list(range(2000, 2040)), list(range(3000, 3000 + extra))
        running = add(scheduler, "running", base + more + [9])
        run_step(scheduler)  # in the cache; decoding from now on
        old = add(scheduler, "old", base + [5])
        plan_step(scheduler)  # copies base from the running row
        finish(scheduler, old)  # its row keeps base + [5, 1]
        near = add(scheduler, "near", base + more + [8])
        plan = plan_step(scheduler)
        if copies:
            assert plan.copies == [RowCopy(running.row, near.row, len(base) + extra)]
            assert near.num_reused == len(base) + extra
        else:
            assert not plan.copies
            assert (near.row, near.num_reused) == (old.row, len(base))


def test_with_nothing_shared_the_row_freed_longest_ago_is_taken():
    scheduler = Scheduler(max_rows=3, budget=FixedBudget(64))
    seqs = [add(scheduler, name, [index] * 10) for index, name in enumerate("abc")]
    run_step(scheduler)
    for seq in (seqs[1], seqs[0], seqs[2]):  # freed in this order
        scheduler.release(seq)
    fresh = add(scheduler, "fresh", [77] * 10)
    run_step(scheduler)
    assert fresh.row == seqs[1].row and fresh.num_reused == 0
    # The evicted row's prompt is gone from the cache; the others are still there.
    again_a = add(scheduler, "again-a", [0] * 10)
    again_b = add(scheduler, "again-b", [1] * 10)
    run_step(scheduler)
    assert again_b.num_reused == 0
    assert (again_a.row, again_a.num_reused) == (seqs[0].row, 9)


def test_prefix_caching_off_reuses_nothing():
    scheduler = Scheduler(max_rows=2, budget=FixedBudget(64), prefix_caching=False)
    first = add(scheduler, "first", 30)
    finish(scheduler, first)
    second = add(scheduler, "second", 30)
    assert run_step(scheduler) == ([], {"second": 30})
    assert second.num_reused == 0


def test_after_a_failed_step_no_row_is_trusted():
    scheduler = Scheduler(max_rows=2, budget=FixedBudget(64))
    first = add(scheduler, "first", 30)
    finish(scheduler, first)
    add(scheduler, "doomed", 5)
    scheduler.admit()
    scheduler.drain()  # what the engine does when a step raises
    second = add(scheduler, "second", 30)
    assert run_step(scheduler) == ([], {"second": 30})
    assert second.num_reused == 0


def test_the_oldest_prompt_goes_first_then_the_shortest():
    scheduler = Scheduler(max_rows=4, budget=FixedBudget(40), prefix_caching=False)
    add(scheduler, "document", 100)
    add(scheduler, "report", 60)
    add(scheduler, "question", 8)
    # The document, admitted first, is never overtaken; the question goes before the report.
    assert run_step(scheduler) == ([], {"document": 40})
    assert run_step(scheduler) == ([], {"document": 40})
    assert run_step(scheduler) == ([], {"document": 20, "question": 8, "report": 12})
    add(scheduler, "greeting", 5)  # the report, oldest now, keeps its place before it
    assert run_step(scheduler) == (["document", "question"], {"report": 40})
    assert run_step(scheduler) == (["document", "question"], {"report": 8, "greeting": 5})


def test_row_accounting_stays_sound_under_churn_and_reports_a_broken_book():
    """Prompts arriving, finishing and being cancelled at random never lose or double a row;
    a row lost from the free list, or filed both free and busy, is reported."""
    import random

    rng = random.Random(7)
    scheduler = Scheduler(4, FixedBudget(16))
    shared = list(range(30))
    most_kept = 0
    for step in range(300):
        action = rng.random()
        if action < 0.4:
            add(scheduler, f"s{step}", shared[:rng.randint(2, 30)] + [rng.randint(100, 200)])
        elif action < 0.6 and scheduler.running:
            scheduler.release(rng.choice(list(scheduler.running.values())))
        elif action < 0.7 and (scheduler.running or scheduler.waiting):
            seqs = list(scheduler.running.values()) + list(scheduler.waiting)
            scheduler.remove(rng.choice(seqs).session_id)
        else:
            plan_step(scheduler)
        assert scheduler.accounting_faults() == []
        most_kept = max(most_kept, len(scheduler.contents.kept))
    assert most_kept > 0  # rows were kept for reuse along the way
    scheduler.waiting.clear()
    for seq in list(scheduler.running.values()):
        scheduler.release(seq)
    add(scheduler, "last", 5)
    plan_step(scheduler)
    (row, seq), = scheduler.running.items()
    scheduler.free_rows.append(row)
    assert scheduler.accounting_faults() == [f"rows [{row}] are both free and busy"]
    scheduler.free_rows.remove(row)
    scheduler.release(seq)
    assert scheduler.accounting_faults() == []
    scheduler.free_rows.remove(row)
    assert scheduler.accounting_faults() == [f"rows [{row}] are neither free nor busy",
                                             f"rows [{row}] are kept for reuse but not free"]
