"""Checks, registered against the behaviour ids they verify.

A check observes; it never decides.  It sets up memory, makes the call and
returns an Observation of what the kernel did.  The harness picks the
spec's expectation for the running kernel and compares, so a wrong spec
makes the suite fail without any check changing.  The suite refuses a
behaviour with no check, and a check naming an id the spec lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .observation import Observation


@dataclass(frozen=True)
class Check:
    name: str                      # the function's name, unique
    behaviours: tuple[str, ...]    # the spec ids this check verifies
    func: Callable[[Any], Observation]
    requires: tuple[str, ...]      # probes needed on top of the behaviours' own `requires`
    timeout: float                 # seconds before the harness reports TIMEOUT
    group: str                     # the KTAP block it is reported in


REGISTRY: list[Check] = []


def check(*behaviours: str, requires: tuple[str, ...] = (), timeout: float = 10.0,
          group: str | None = None) -> Callable[[Callable[[Any], Observation]], Callable[[Any], Observation]]:
    """Register `func(ctx) -> Observation` as the check of `behaviours`.

    The group defaults to the module's last name (conformance.checks.einval
    -> "einval").
    """
    def register(func: Callable[[Any], Observation]) -> Callable[[Any], Observation]:
        if any(c.name == func.__name__ for c in REGISTRY):
            raise ValueError(f"two checks named {func.__name__}")
        REGISTRY.append(Check(func.__name__, tuple(behaviours), func, tuple(requires), timeout,
                              group or func.__module__.rsplit(".", 1)[-1]))
        return func
    return register


class Skip(Exception):
    """Raised by a check (in its child) when the machine lacks something it needs."""
