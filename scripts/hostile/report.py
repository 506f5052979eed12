"""The result of each check, and the report printed from them."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Check:
    """One check: its figures and, when it failed, why."""

    section: str
    name: str
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: str = ""


def print_report(checks: list[Check], limit: int = 40) -> None:
    """One line per check, its figures, then its failures."""
    for check in checks:
        verdict = "FAIL" if check.failures else f"skipped: {check.skipped}" if check.skipped \
            else "pass"
        print(f"[{check.section}] {check.name}: {verdict}")
        for key, value in check.figures.items():
            print(f"    {key}: {value}")
        for failure in check.failures[:limit]:
            print(f"    ! {failure}")
        if len(check.failures) > limit:
            print(f"    ! ... and {len(check.failures) - limit} more (--json has all)")
    failed = sum(bool(c.failures) for c in checks)
    skipped = sum(bool(c.skipped) for c in checks)
    print(f"\n{len(checks)} checks: {failed} failed, {skipped} skipped")


def print_json(checks: list[Check]) -> None:
    """Every check with all its failures, as JSON."""
    print(json.dumps([asdict(c) for c in checks], indent=1, default=str))
