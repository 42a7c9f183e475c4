"""The verdict on one behaviour: an Observation held against the spec's
Expectation for the running kernel.

Only the keys the expectation sets are compared, so a spec that says
nothing about `move` for an errno does not fail because a check happened
to read it.  The expected and observed strings use the same words in the
same order, so a reader sees the difference at a glance.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from spec.model import Expectation

from .observation import Observation


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"          # the kernel disagrees with the spec
    SKIP = "SKIP"          # not checkable here (probe, kernel version, unobservable)
    XFAIL = "XFAIL"        # documented but unreachable, and the spec's `instead` came
    TIMEOUT = "TIMEOUT"    # the check ran past its timeout and was killed
    ERROR = "ERROR"        # the check or the machine broke, not the kernel


# From least to most serious: of several results for one behaviour (two
# checks of it, or two runs in one column of the matrix) the worst stands.
SEVERITY = (Status.SKIP, Status.XFAIL, Status.PASS, Status.ERROR, Status.TIMEOUT, Status.FAIL)


# The expectation's keys besides errno, in Expectation.describe() order.
KEYS = ("move", "memory", "wake", "huge", "swap", "feature", "ioctl_bit")


class Verdict(NamedTuple):
    status: Status
    expected: str
    observed: str
    reason: str


def one_line(text: str) -> str:
    """Prose from the spec (folded YAML, several sentences) as one line of output."""
    return " ".join(text.split())


def observed_value(obs: Observation, key: str) -> str | None:
    return obs.move_class() if key == "move" else getattr(obs, key)


def describe(obs: Observation, exp: Expectation) -> str:
    """The observation in the words of `exp.describe()`, for the keys it sets."""
    parts = [f"errno={obs.errno or 0}"]
    for key in KEYS:
        if getattr(exp, key) is not None:
            parts.append(f"{key}={observed_value(obs, key) or 'unobserved'}")
    return " ".join(parts)


def judge(obs: Observation, exp: Expectation, unobservable: str | None = None) -> Verdict:
    expected = exp.describe()
    observed = describe(obs, exp)
    keys = [k for k in KEYS if getattr(exp, k) is not None]

    missing = [k for k in keys if observed_value(obs, k) is None]
    if missing:
        # The spec expects something the check never looked at: a broken
        # check, not a kernel finding.
        return Verdict(Status.ERROR, expected, observed, f"the check did not observe {', '.join(missing)}")
    differ = [k for k in keys if observed_value(obs, k) != getattr(exp, k)]

    if exp.instead is not None:
        if obs.errno == exp.errno:
            return Verdict(Status.FAIL, expected, observed,
                           f"the spec says {exp.errno} is unreachable, the kernel returned it")
        if obs.errno != exp.instead:
            return Verdict(Status.FAIL, expected, observed, f"differs in errno (expected {exp.instead} "
                           f"in place of the unreachable {exp.errno})")
        if differ:
            return Verdict(Status.FAIL, expected, observed, f"differs in {', '.join(differ)}")
        reason = f"unreachable from user space: {exp.instead} comes first"
        if unobservable:
            reason += f"; {one_line(unobservable)}"
        return Verdict(Status.XFAIL, expected, observed, reason)

    if obs.errno != exp.errno:
        differ.insert(0, "errno")
    if differ:
        return Verdict(Status.FAIL, expected, observed, f"differs in {', '.join(differ)}")
    return Verdict(Status.PASS, expected, observed, "")
