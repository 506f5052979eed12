"""The soak's verdict: each check with what broke it, and the tables of outcomes, recovery times
and memory."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .answers import COMPLETE, CUT, ERROR, FAILED, LEFT, REFUSED, Result
from .chaos import BACKEND_KILL, PROXY_RESTART, ROLLING_RESTART, Event
from .watch import Growth, median_and_worst

OUTCOMES = (COMPLETE, ERROR, CUT, LEFT, REFUSED, FAILED)


@dataclass
class Check:
    name: str
    failures: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def during(result: Result, event: Event, margin: float = 1.0) -> bool:
    """Whether a request overlapped the fault (until recovery and a margin after it)."""
    end = (event.recovered or float("inf")) + margin
    return result.started < end and result.ended > event.started


def check_requests(results: list[Result], events: list[Event], form: str) -> list[Check]:
    failed = Check("no request failed (a 500, 502 or 504, a hang, a silent truncation, "
                   "a 4xx for a good request, a bad answer)",
                   [f"{r.call.kind} {r.call.path}: {r.detail}" for r in results
                    if r.outcome == FAILED])
    restarts = [e for e in events if e.kind == PROXY_RESTART]
    refused = Check("connections refused only while the proxy restarted" if form == "single"
                    else "no connection refused (the edge stays up)")
    for r in results:
        if r.outcome == REFUSED and (form == "edge" or not any(during(r, e) for e in restarts)):
            refused.failures.append(f"{r.call.kind} {r.call.path}: {r.detail}")
    return [failed, refused]


def check_answers(results: list[Result], references: dict[str, list[str]],
                  compare: bool) -> Check:
    done = [r for r in results if r.outcome == COMPLETE and r.call.key]
    wrong = [r for r in done if r.texts != references.get(r.call.key)]
    check = Check("every answer equals the same request's answer on the idle server",
                  note=f"{len(done) - len(wrong)} of {len(done)} equal")
    if compare:
        check.failures = [f"{r.call.kind} {'streamed ' if r.call.stream else ''}{r.call.key[:70]}:"
                          f" {r.texts!r:.120} != {references.get(r.call.key)!r:.120}"
                          for r in wrong]
    else:
        check.note += " (not held to it: answers in this dtype depend on the batch)"
    return check


def check_events(results: list[Result], events: list[Event], ready_within: float) -> list[Check]:
    recovered = Check("the stack served again after every fault",
                      [f"{e.kind} {e.target}: {e.phases}" for e in events if e.recovered is None])
    kills = [e for e in events if e.kind == BACKEND_KILL and e.seconds is not None]
    ready = Check(f"a killed backend is ready again within {ready_within:g} s",
                  [f"{e.target}: {e.seconds:.1f} s" for e in kills if e.seconds > ready_within])
    rolling = Check("a rolling restart fails no request and cuts no stream")
    for event in (e for e in events if e.kind == ROLLING_RESTART):
        for r in results:
            harmed = r.outcome not in (COMPLETE, LEFT) and r.call.expect == "answer"
            if harmed and during(r, event, margin=0.0):
                rolling.failures.append(f"{event.target}: {r.call.kind}: {r.outcome} {r.detail}")
    return [recovered, ready] + ([rolling] if any(e.kind == ROLLING_RESTART for e in events)
                                 else [])


def check_leaks(idle: bool, last_health: list[dict], faults: list[str], growths: list[Growth],
                rss_bounds_mb: dict[str, float], fd_slack: int) -> list[Check]:
    rest = Check("after the run: no busy row, waiting prompt or open session; rows accounted",
                 [] if idle else [f"/health: {h}" for h in last_health])
    rows = Check("the row bookkeeping was sound at every /health poll", faults[:10])
    memory = Check("no process grew by more than its bound, or kept more open files")
    for g in growths:
        bound = rss_bounds_mb[g.role.split()[-1] if g.role.split()[-1] in rss_bounds_mb else "*"]
        if g.rss_growth_mb > bound:
            memory.failures.append(f"{g.role} (pid {g.pid}) grew {g.rss_growth_mb:.1f} MiB "
                                   f"over {g.covered_s:.0f} s (bound {bound:g})")
        if g.fds_after > g.fds_before + fd_slack:
            memory.failures.append(f"{g.role} (pid {g.pid}) has {g.fds_after} open files, "
                                   f"{g.fds_before} when warm")
    return [rest, rows, memory]


def print_report(checks: list[Check], results: list[Result], events: list[Event],
                 growths: list[Growth], seconds: float) -> None:
    print(f"\n{len(results)} requests in {seconds:.0f} s\n")
    kinds = sorted({r.call.kind for r in results})
    counts = Counter((r.call.kind, r.outcome) for r in results)
    print("| request | " + " | ".join(OUTCOMES) + " |")
    print("|---|" + "---|" * len(OUTCOMES))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(str(counts[kind, o]) for o in OUTCOMES) + " |")
    print("\n| fault | times | recovered in, median | worst |\n|---|---|---|---|")
    for kind in (BACKEND_KILL, ROLLING_RESTART, PROXY_RESTART):
        times = [e.seconds for e in events if e.kind == kind and e.seconds is not None]
        spread = median_and_worst(times)
        if [e for e in events if e.kind == kind]:
            print(f"| {kind} | {len([e for e in events if e.kind == kind])} | "
                  + (f"{spread[0]:.1f} s | {spread[1]:.1f} s |" if spread else "never | - |"))
    print("\n| process | pid | RSS when warm | at the end | growth | open files warm / end |")
    print("|---|---|---|---|---|---|")
    for g in growths:
        print(f"| {g.role} | {g.pid} | {g.rss_before / 2**20:.0f} MiB | "
              f"{g.rss_after / 2**20:.0f} MiB | {g.rss_growth_mb:+.1f} MiB over "
              f"{g.covered_s:.0f} s | {g.fds_before} / {g.fds_after} |")
    print("\n| check | result |\n|---|---|")
    for check in checks:
        verdict = "pass" if check.passed else f"**FAIL** ({len(check.failures)})"
        print(f"| {check.name} | {verdict}{' - ' + check.note if check.note else ''} |")
    for check in checks:
        for failure in check.failures[:8]:
            print(f"FAIL {check.name}: {failure}")
