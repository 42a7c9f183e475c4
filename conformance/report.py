"""What a run leaves behind for machines and for people: the counts and
exit status kselftest uses, the JSON record the HTML docs read, and a short
summary on stderr that lists only what needs a look.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .judge import Status

if TYPE_CHECKING:
    from .harness import Result

# kselftest's exit codes (tools/testing/selftests/kselftest.h).
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_SKIP = 4


@dataclass(frozen=True)
class Totals:
    """kselftest's counters.  A TIMEOUT counts as an error, as kselftest's
    runner reports a timed-out test; `timeout` keeps the share for people."""

    passed: int = 0
    fail: int = 0
    xfail: int = 0
    skip: int = 0
    error: int = 0
    timeout: int = 0
    xpass: int = 0  # nothing in the spec is expected to fail yet pass

    @classmethod
    def of(cls, results: Sequence[Result]) -> Totals:
        n = {s: sum(r.status == s for r in results) for s in Status}
        return cls(n[Status.PASS], n[Status.FAIL], n[Status.XFAIL], n[Status.SKIP],
                   n[Status.ERROR] + n[Status.TIMEOUT], n[Status.TIMEOUT])

    def __str__(self) -> str:
        return (f"pass:{self.passed} fail:{self.fail} xfail:{self.xfail} xpass:{self.xpass} "
                f"skip:{self.skip} error:{self.error}")

    def as_dict(self) -> dict[str, int]:
        return {"pass": self.passed, "fail": self.fail, "xfail": self.xfail, "xpass": self.xpass,
                "skip": self.skip, "error": self.error, "timeout": self.timeout}

    @property
    def exit_code(self) -> int:
        if self.fail or self.error:
            return EXIT_FAIL
        if not self.passed and not self.xfail:
            return EXIT_SKIP
        return EXIT_PASS


def record(ctx: Any, features: int, probes: Mapping[str, Any], options: Sequence[str],
           results: Sequence[Result]) -> dict[str, Any]:
    """The JSON sidecar: what ran where, and every result."""
    return {
        "kernel": {"release": ctx.release, "version": str(ctx.version), "machine": os.uname().machine},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": {"path": str(ctx.spec.path), "name": ctx.spec.name, "date": ctx.spec.date},
        "features": features,
        "probes": {name: {"ok": p.ok, "detail": p.detail} for name, p in probes.items()},
        "options": sorted(options),
        "totals": Totals.of(results).as_dict(),
        "results": [result_record(r) for r in results],
    }


def result_record(r: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "check": r.check, "group": r.group, "status": r.status.value,
                           "expected": r.expected, "observed": r.observed, "reason": r.reason,
                           "duration": r.duration}
    if r.parts:
        # several checks judge this behaviour: each one's verdict, the worst above
        out["checks"] = [{k: v for k, v in result_record(p).items() if k not in ("id", "group")}
                         for p in r.parts]
    return out


def summary(results: Sequence[Result], release: str) -> str:
    """For the person at the terminal: the counts, then every result that is not a plain pass."""
    totals = Totals.of(results)
    lines = [f"conformance on {release}: {len(results)} results: {totals.passed} pass, {totals.fail} fail, "
             f"{totals.xfail} xfail, {totals.skip} skip, {totals.error - totals.timeout} error, "
             f"{totals.timeout} timeout"]
    width = max((len(r.status.value) for r in results), default=0)
    for r in results:
        if r.status == Status.PASS:
            continue
        detail = r.reason
        if r.status == Status.FAIL and r.expected:
            detail = f"expected {r.expected}, observed {r.observed}" + (f" ({r.reason})" if r.reason else "")
        lines.append(f"  {r.status.value:<{width}} {r.id}: {detail}")
    return "\n".join(lines) + "\n"
