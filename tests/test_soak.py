"""scripts/soak.py: how it judges an answer, and a short soak on the mock with its faults."""
from __future__ import annotations

import subprocess
import sys

import pytest

from nginx_edge import NGINX, NO_NGINX
from processes import REPO
from soaking.answers import COMPLETE, ERROR, FAILED, REFUSED, Result, _read_events
from soaking.calls import Call, greedy_pool
from soaking.chaos import PROXY_RESTART, Event, plan
from soaking.report import check_answers, check_requests

CHAT = Call("chat", "/v1/chat/completions", {}, stream=True, key="k")
GENERATE = Call("generate", "/generate", {}, stream=True, key="g")


def judged(call: Call, text: str) -> Result:
    result = Result(call, 0.0, 1.0)
    _read_events(call, text, result)
    return result


def test_a_stream_is_complete_only_with_its_terminator():
    chunk = 'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    done = judged(CHAT, chunk + "data: [DONE]\n\n")
    assert (done.outcome, done.texts) == (COMPLETE, ["Hi"])
    assert judged(CHAT, chunk).outcome == FAILED  # ends cleanly, no [DONE]: silently cut
    interrupted = chunk + ('data: {"error":{"message":"the generation was interrupted: x",'
                           '"code":"unavailable"},"retry_after":5}\n\n')
    assert judged(CHAT, interrupted).outcome == ERROR
    events = 'data: {"index":0,"text":"a b"}\n\n'
    summary = 'data: {"responses":[{"index":0,"text":"a b","finish_reason":"length"}]}\n\n'
    assert judged(GENERATE, events + summary).texts == ["a b"]
    assert judged(GENERATE, events).outcome == FAILED
    lying = 'data: {"responses":[{"index":0,"text":"a b c","finish_reason":"length"}]}\n\n'
    assert judged(GENERATE, events + lying).outcome == FAILED


def test_answers_are_held_to_the_idle_ones_and_refusals_to_proxy_restarts():
    pool = greedy_pool(8)
    assert len({call.key for call in pool}) == len(pool)  # each answerable request once
    same, other = Result(CHAT, 0, 1, COMPLETE), Result(CHAT, 0, 1, COMPLETE)
    same.texts, other.texts = ["Hi"], ["Ho"]
    check = check_answers([same, other], {"k": ["Hi"]}, compare=True)
    assert len(check.failures) == 1 and "'Ho'" in check.failures[0]
    assert check_answers([same, other], {"k": ["Hi"]}, compare=False).passed
    restart = Event(PROXY_RESTART, "proxy", started=10.0, recovered=12.0)
    inside, outside = Result(CHAT, 11.0, 11.5, REFUSED), Result(CHAT, 30.0, 30.5, REFUSED)
    failed, refused = check_requests([inside, outside], [restart], "single")
    assert failed.passed and len(refused.failures) == 1
    assert not check_requests([inside], [restart], "edge")[1].passed


def test_the_schedule_has_every_fault_of_the_form_and_ends_before_the_run():
    for form, kinds in (("single", 2), ("edge", 3)):
        schedule = plan(form, 60.0, 90.0)
        assert len({kind for _, kind, _ in schedule}) == kinds
        assert all(0 < offset < 60.0 for offset, _, _ in schedule)


def soak(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/soak.py", "--model", "mock", "--quiet", "5",
                           "--seed", "3", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.processes
@pytest.mark.timeout(400)
def test_a_short_soak_on_the_mock_loses_nothing_through_kills_and_restarts():
    run = soak("--duration", "50", "--chaos-every", "15", timeout=380)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    for line in ("| backend killed |", "| proxy restarted |",
                 "| every answer equals the same request's answer on the idle server | pass"):
        assert line in run.stdout, run.stdout


@pytest.mark.processes
@pytest.mark.timeout(500)
@pytest.mark.skipif(NGINX is None, reason=NO_NGINX)
def test_a_short_soak_behind_the_edge_survives_a_rolling_restart():
    run = soak("--form", "edge", "--duration", "70", "--chaos-every", "12", timeout=480)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "| replica restarted | 2" in run.stdout and "| backend killed | 2" in run.stdout
    assert "| a rolling restart fails no request and cuts no stream | pass |" in run.stdout


def test_memory_is_judged_on_the_processes_alive_at_the_end_from_when_they_were_warm():
    from soaking.watch import Sample, growth

    samples = [Sample(0, "api-1 worker", 1, 100, 9), Sample(10, "api-1 worker", 1, 120, 9),
               Sample(0, "api-1 backend", 2, 900, 11), Sample(5, "api-1 backend", 2, 0, 11),
               Sample(6, "api-1 backend", 3, 800, 11), Sample(30, "api-1 backend", 3, 820, 11),
               Sample(40, "api-1 backend", 3, 850, 11),
               Sample(40, "api-1 worker", 1, 130, 12)]
    found = {g.pid: g for g in growth(samples, warm_at=1.0, settle_s=20.0)}
    assert set(found) == {1, 3}  # the killed backend's exit is not a shrinking process
    assert (found[1].rss_before, found[1].rss_after, found[1].fds_after) == (120, 130, 12)
    # The restarted backend is judged from 20 s after it appeared, not from its loading.
    assert (found[3].rss_before, found[3].rss_after, found[3].covered_s) == (820, 850, 10)
