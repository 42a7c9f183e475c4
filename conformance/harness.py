"""Running checks: each in a forked child, in its own process group, with a
timeout, so that a check that hangs, crashes or leaks a process costs one
result and never the run.

The parent decides what can be decided without touching the kernel (the
coverage of the spec, kernel version, probes, unobservable behaviours)
before it forks; the child only observes and sends its Observation back as
one JSON line over a pipe; the parent judges it against the spec.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from spec.model import Behaviour, Spec

from .judge import SEVERITY, Status, judge, one_line
from .observation import Observation
from .registry import Check, Skip

COVERAGE_GROUP = "coverage"  # the KTAP block of ids with no check, and checks of unknown ids
MOVE_PROBE = "move"
REAP_GRACE = 5.0  # seconds to wait for a SIGKILLed process group to disappear
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_NO_RESULT = 70  # the child's status when it could not even send an error (EX_SOFTWARE)


@dataclass(frozen=True)
class Item:
    """One planned result: a behaviour (or a check's unknown id) and the checks judging it."""

    id: str
    group: str
    behaviour: Behaviour | None   # None: a check names an id the spec lacks
    checks: tuple[Check, ...]     # empty: no check covers the behaviour


@dataclass(frozen=True)
class Result:
    id: str
    check: str | None             # the check, or the checks joined by ", "
    group: str
    status: Status
    expected: str = ""
    observed: str = ""
    reason: str = ""
    duration: float = 0.0
    parts: tuple[Result, ...] = ()  # one per check, when several checks judge the behaviour


@dataclass(frozen=True)
class Outcome:
    """What came back from one check's child: an observation, or why there is none."""

    observation: Observation | None
    status: Status | None = None   # SKIP, TIMEOUT or ERROR when there is no observation
    reason: str = ""
    duration: float = 0.0


class Listener(Protocol):
    def begin_group(self, name: str, count: int) -> None: ...
    def result(self, result: Result) -> None: ...
    def end_group(self, name: str, results: Sequence[Result]) -> None: ...


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP reached the parent (see interruptible()).  A
    BaseException so that no `except Exception` on the way up swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- what to run ---------------------------------------------------------------

def selected(ids: Sequence[str], only: Sequence[str]) -> bool:
    return not only or any(fnmatch.fnmatchcase(i, pattern) for i in ids for pattern in only)


def plan(spec: Spec, checks: Sequence[Check], only: Sequence[str] = ()) -> list[Item]:
    """Every result the run will report, in the order it reports them.

    One result per behaviour id, however many checks judge it, so a test
    path (group, id) is unique and a reader keyed by id cannot lose a
    failure.  Coverage problems come first; then the groups in the order of
    their first behaviour in the spec, each in spec order.
    """
    known = {b.id for b in spec.behaviours}
    covered = {i for c in checks for i in c.behaviours}
    coverage = [Item(b.id, COVERAGE_GROUP, b, ()) for b in spec.behaviours
                if b.id not in covered and selected([b.id], only)]
    coverage += [Item(i, COVERAGE_GROUP, None, (c,)) for c in checks for i in c.behaviours
                 if i not in known and selected([i], only)]
    items = []
    for b in spec.behaviours:
        judging = tuple(c for c in checks if b.id in c.behaviours)
        if judging and selected([b.id], only):
            items.append(Item(b.id, judging[0].group, b, judging))
    order = list(dict.fromkeys(item.group for item in items))
    return coverage + sorted(items, key=lambda item: order.index(item.group))


def groups(items: Sequence[Item]) -> list[tuple[str, list[Item]]]:
    out: dict[str, list[Item]] = {}
    for item in items:
        out.setdefault(item.group, []).append(item)
    return list(out.items())


def coverage_result(item: Item) -> Result:
    if not item.checks:
        return Result(item.id, None, item.group, Status.FAIL, reason="no check covers this behaviour")
    name = item.checks[0].name
    return Result(item.id, name, item.group, Status.FAIL, reason=f"check {name} names a behaviour the spec lacks")




def merged(item: Item, parts: Sequence[Result]) -> Result:
    if len(parts) == 1:
        return parts[0]
    worst = max(parts, key=lambda r: SEVERITY.index(r.status))
    reason = worst.reason
    if reason and len({(r.status, r.reason) for r in parts}) > 1:
        reason = f"{worst.check}: {reason}"  # the checks disagree: say which one this is
    return Result(item.id, ", ".join(r.check or "" for r in parts), item.group, worst.status,
                  worst.expected, worst.observed, reason, round(sum(r.duration for r in parts), 3),
                  tuple(parts))


def decide_before_fork(b: Behaviour, check: Check, ctx: Any, probes: dict[str, Any]) -> Result | None:
    """A SKIP (or ERROR) that needs no child, or None when the check must run."""
    def result(status: Status, reason: str) -> Result:
        return Result(b.id, check.name, check.group, status, reason=one_line(reason))

    # A kernel without the ioctl gets one reason for every move behaviour,
    # not a version comparison per behaviour.
    move = probes.get(MOVE_PROBE)
    if b.id.startswith("move.") and move is not None and not move.ok:
        return result(Status.SKIP, move.detail)
    exp = b.expectation_for(ctx.version)
    if exp is None:
        held = ", ".join(str(e.kernels) for e in b.expect)
        return result(Status.SKIP, f"not applicable on {ctx.release} (behaviour holds {held})")
    for name in dict.fromkeys(b.requires + check.requires):
        probe = probes.get(name)
        if probe is None:
            return result(Status.ERROR, f"no probe named {name!r}")
        if not probe.ok:
            return result(Status.SKIP, f"needs {name}: {probe.detail}")
    if b.unobservable and exp.instead is None:
        return result(Status.SKIP, b.unobservable)
    return None


# --- running one check -------------------------------------------------------------

# <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, arg: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.prctl(option, arg, 0, 0, 0)
    if rc < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return rc


@contextmanager
def subreaper() -> Iterator[None]:
    """Become the reaper of orphaned descendants for the run: a check's
    grandchild is then re-parented to us when the check's child exits, so it
    can be killed and reaped here rather than linger as a zombie under a
    container's init that never waits."""
    old = ctypes.c_int(0)
    _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(old))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield
    finally:
        _prctl(PR_SET_CHILD_SUBREAPER, old.value)


def kill_group(pgid: int) -> bool:
    """SIGKILL the group and reap those of its members that are our children.
    True when no member is left."""
    deadline = time.monotonic() + REAP_GRACE
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _child(check: Check, ctx: Any, w: int) -> None:
    """The forked side: observe, send one JSON line, never return."""
    code = 0
    try:
        os.setpgid(0, 0)
        for s in INTERRUPTS:
            signal.signal(s, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing check leaves no core file
        sys.stdout.flush()
        os.dup2(2, 1)  # a check's prints must not break the KTAP on stdout
        sys.stdout = sys.stderr
        try:
            obs = check.func(ctx)
            if not isinstance(obs, Observation):
                raise TypeError(f"{check.name} returned {type(obs).__name__}, not an Observation")
            message: dict[str, Any] = {"observation": obs.as_dict()}
        except Skip as exc:
            message = {"skip": str(exc) or "skipped by the check"}
        except Exception as exc:
            traceback.print_exc()
            message = {"error": traceback.format_exception_only(exc)[-1].strip()}
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(w, data):]
    except BaseException:
        code = EXIT_NO_RESULT  # even SystemExit: the parent reports the missing result
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _observation(d: dict[str, Any]) -> Observation:
    return Observation(**{f.name: d[f.name] for f in fields(Observation) if f.name in d})


def _decode(data: bytes) -> Outcome | None:
    line = data.split(b"\n", 1)[0] if b"\n" in data else None
    if line is None:
        return None
    try:
        message = json.loads(line)
        if "observation" in message:
            return Outcome(_observation(message["observation"]))
        if "skip" in message:
            return Outcome(None, Status.SKIP, one_line(message["skip"]))
        return Outcome(None, Status.ERROR, one_line(message["error"]))
    except (ValueError, TypeError, KeyError) as exc:
        return Outcome(None, Status.ERROR, f"unreadable result from the check: {exc}")


def _died(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"the check was killed by {name}"
    return f"the check exited with status {os.waitstatus_to_exitcode(status)} without a result"


def run_check(check: Check, ctx: Any) -> Outcome:
    """Fork, run `check` in the child, and collect its outcome within its timeout."""
    start = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(check, ctx, w)
    os.close(w)
    try:
        os.setpgid(pid, pid)  # also here, so a kill cannot miss the group while the child starts
    except OSError:
        pass
    data = b""
    status = 0
    exited = timed_out = False
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        if PENDING.fd >= 0:
            poller.register(PENDING.fd, select.POLLIN)
        deadline = start + check.timeout
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(remaining * 1000):
                if fd == r:
                    chunk = os.read(r, 65536)
                    data += chunk
                    if not chunk:
                        poller.unregister(r)  # EOF; the exit comes through the pidfd
                elif fd == pidfd:
                    exited = True
                else:
                    _woken(fd)  # raises Interrupted if SIGINT/SIGTERM/SIGHUP came
        if exited:
            # A grandchild may hold the write end open: take what is there, do not wait for EOF.
            os.set_blocking(r, False)
            try:
                while chunk := os.read(r, 65536):
                    data += chunk
            except BlockingIOError:
                pass
    finally:
        os.close(pidfd)
        os.close(r)
        # Whatever happened (timeout, an exception, SIGINT in the parent), the
        # child's whole group goes: the child and anything it left behind.
        if not exited:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        status = os.waitpid(pid, 0)[1]
        left = not kill_group(pid)
    duration = time.monotonic() - start
    if timed_out:
        outcome = Outcome(None, Status.TIMEOUT, f"killed after {check.timeout:g} s")
    else:
        outcome = _decode(data) or Outcome(None, Status.ERROR, _died(status))
    if left:
        outcome = Outcome(None, Status.ERROR, f"a process of the check's group {pid} survived SIGKILL")
    return Outcome(outcome.observation, outcome.status, outcome.reason, duration)


# --- the run -----------------------------------------------------------------------

def judged(b: Behaviour, check: Check, outcome: Outcome, ctx: Any) -> Result:
    exp = b.expectation_for(ctx.version)
    assert exp is not None
    base = Result(b.id, check.name, check.group, Status.ERROR, exp.describe(),
                  duration=round(outcome.duration, 3))
    if outcome.observation is None:
        assert outcome.status is not None
        return replace(base, status=outcome.status, reason=outcome.reason)
    v = judge(outcome.observation, exp, b.unobservable)
    return replace(base, status=v.status, expected=v.expected, observed=v.observed, reason=v.reason)


class Silent:
    def begin_group(self, name: str, count: int) -> None:
        pass

    def result(self, result: Result) -> None:
        pass

    def end_group(self, name: str, results: Sequence[Result]) -> None:
        pass


def run(spec: Spec, checks: Sequence[Check], ctx: Any, probes: dict[str, Any],
        only: Sequence[str] = (), listener: Listener | None = None) -> list[Result]:
    """Run the checks of `spec`'s behaviours selected by `only` and return one
    result per planned item, telling `listener` as they come."""
    listener = listener or Silent()
    items = plan(spec, checks, only)
    ran: dict[str, Outcome] = {}
    results: list[Result] = []

    def verdict(b: Behaviour, check: Check) -> Result:
        early = decide_before_fork(b, check, ctx, probes)
        if early is not None:
            return early
        raise_if_interrupted()
        if check.name not in ran:
            ran[check.name] = run_check(check, ctx)
        return judged(b, check, ran[check.name], ctx)

    with subreaper():
        for name, members in groups(items):
            listener.begin_group(name, len(members))
            block: list[Result] = []
            for item in members:
                if item.behaviour is None or not item.checks:
                    result = coverage_result(item)
                else:
                    result = merged(item, [verdict(item.behaviour, c) for c in item.checks])
                block.append(result)
                listener.result(result)
            listener.end_group(name, block)
            results += block
    return results


class _Pending:
    """The first interrupting signal, and the fd that wakes the parent's poll."""

    signum: int | None = None
    fd: int = -1


PENDING = _Pending()


def raise_if_interrupted() -> None:
    if PENDING.signum is not None:
        raise Interrupted(PENDING.signum)


def _woken(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
    raise_if_interrupted()


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into Interrupted in the parent, so the
    running child's group is killed and the system restored on the way out.

    The handler only records the signal: an exception raised inside a
    signal handler can land in code that swallows it (os.fork's at-fork
    hooks print it as "Exception ignored" and carry on).  Interrupted is
    raised at known points instead: between checks, and from the poll that
    waits for a child, which the signal wakes through set_wakeup_fd.
    """
    def handler(signum: int, frame: object) -> None:
        if PENDING.signum is None:
            PENDING.signum = signum

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old = {s: signal.signal(s, handler) for s in INTERRUPTS}
    old_fd = signal.set_wakeup_fd(w)
    PENDING.signum, PENDING.fd = None, r
    try:
        yield
        raise_if_interrupted()
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        PENDING.fd = -1
        os.close(r)
        os.close(w)
