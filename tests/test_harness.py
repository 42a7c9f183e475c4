"""The conformance harness on its own: deliberately bad checks (one hangs,
one segfaults, one leaks a process, one raises) each cost one result and
never the run; coverage gaps fail; skips are decided before forking; the
verdicts follow the spec's expectations; the KTAP parses strictly and
agrees with the JSON record.

The checks here are registered in lists handed to the harness, never in
conformance.registry.REGISTRY, and they judge real behaviours of the real
spec on the real kernel's context.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod
import faulthandler
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ktap_grammar
import pytest
from procfs import PGRP, alive, processes_where

import spec
from conformance import harness
from conformance.context import make_context
from conformance.judge import Status, judge
from conformance.ktap import KtapWriter
from conformance.observation import MOVE_SENTINEL, Observation
from conformance.probes import Probe
from conformance.registry import Check, Skip
from conformance.report import EXIT_FAIL, EXIT_PASS, EXIT_SKIP, Totals, record
from spec.model import Behaviour, Expectation, KernelRange, Spec, Version

SPEC = spec.load()
CTX = make_context(SPEC, frozenset())
PROBE_NAMES = sorted({r for b in SPEC.behaviours for r in b.requires} | {harness.MOVE_PROBE})
ALL_OK = {name: Probe(name, True, "granted for the test") for name in PROBE_NAMES}
PAGE = CTX.page_size


# --- building blocks computed from the model -----------------------------------------

def plain_behaviours() -> list[Behaviour]:
    """Behaviours any machine can run: no probe needed, observable, an
    expectation for this kernel and no `instead`."""
    out = []
    for b in SPEC.behaviours:
        exp = b.expectation_for(CTX.version)
        if b.id.startswith("move.") and not b.requires and not b.unobservable and exp and not exp.instead:
            out.append(b)
    return out


def satisfying(exp: Expectation) -> Observation:
    """An observation the spec's expectation accepts, built from the expectation."""
    name = exp.instead or exp.errno
    move = {"len": PAGE, "-errno": -getattr(errno_mod, name or "EPERM"), "untouched": MOVE_SENTINEL,
            "moved-bytes": PAGE // 2, None: None}[exp.move]
    return Observation(errno=name, move=move, move_before=MOVE_SENTINEL if exp.move else None, len=PAGE,
                       memory=exp.memory, wake=exp.wake, huge=exp.huge, swap=exp.swap, feature=exp.feature,
                       ioctl_bit=exp.ioctl_bit)


def contradicting(exp: Expectation) -> Observation:
    """The satisfying observation with another errno."""
    other = "EPERM" if (exp.instead or exp.errno) != "EPERM" else "EIO"
    return dataclasses.replace(satisfying(exp), errno=other)


def expectation(behaviour_id: str) -> Expectation:
    exp = SPEC.behaviour(behaviour_id).expectation_for(CTX.version)
    assert exp is not None
    return exp


def sub_spec(behaviours: Sequence[Behaviour]) -> Spec:
    return dataclasses.replace(SPEC, behaviours=tuple(behaviours), _by_id={})


def check(func: Callable[..., Observation], *ids: str, timeout: float = 10.0, group: str = "test",
          requires: tuple[str, ...] = ()) -> Check:
    return Check(func.__name__, ids, func, requires, timeout, group)


def run(spec_: Spec, checks: Sequence[Check], probes: dict[str, Probe] | None = None,
        only: Sequence[str] = ()) -> tuple[list[harness.Result], str]:
    out = io.StringIO()
    writer = KtapWriter(out)
    writer.header(len(harness.groups(harness.plan(spec_, checks, only))), [f"kernel: {CTX.release}"])
    results = harness.run(spec_, checks, CTX, ALL_OK if probes is None else probes, only, writer)
    writer.totals(Totals.of(results))
    assert out.getvalue() == writer.text()
    return results, writer.text()


def group_members(pgid: int) -> list[int]:
    return processes_where(PGRP, pgid)


# --- the bad checks (module level: the forked child calls them) ------------------------

PIDS = Path(os.environ.get("TMPDIR", "/tmp")) / f"uffd-uabi-test-harness-{os.getpid()}"


def note_pid(name: str, pid: int) -> None:
    PIDS.mkdir(exist_ok=True)
    (PIDS / name).write_text(f"{pid} {os.getpgid(pid)}")


def read_pid(name: str) -> tuple[int, int]:
    pid, pgid = (PIDS / name).read_text().split()
    return int(pid), int(pgid)


def hangs(ctx: object) -> Observation:
    note_pid("hangs", os.getpid())
    time.sleep(3600)
    raise AssertionError("unreachable")


def segfaults(ctx: object) -> Observation:
    faulthandler.disable()  # pytest's handler would print a Python traceback for the crash
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def leaks(ctx: object) -> Observation:
    pid = os.fork()
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    note_pid("leaked", pid)
    return satisfying(expectation(LEAKS_ID))


def raises(ctx: object) -> Observation:
    raise ValueError("the check itself broke")


def skips(ctx: object) -> Observation:
    raise Skip("the machine lacks what the check needs")


def agrees(ctx: object) -> Observation:
    return satisfying(expectation(AGREES_ID))


def disagrees(ctx: object) -> Observation:
    return contradicting(expectation(DISAGREES_ID))


def must_not_run(ctx: object) -> Observation:
    note_pid("must_not_run", os.getpid())
    raise AssertionError("this check should have been skipped before the fork")


PLAIN = plain_behaviours()
HANGS_ID, SEGFAULTS_ID, LEAKS_ID, RAISES_ID, SKIPS_ID, AGREES_ID, DISAGREES_ID = (b.id for b in PLAIN[:7])


@pytest.fixture(autouse=True)
def pid_dir() -> None:
    yield
    for f in PIDS.glob("*"):
        f.unlink()
    if PIDS.exists():
        PIDS.rmdir()


# --- the machinery -------------------------------------------------------------------

def test_bad_checks_cost_one_result_each_and_leave_no_process() -> None:
    checks = [check(hangs, HANGS_ID, timeout=1.0), check(segfaults, SEGFAULTS_ID), check(leaks, LEAKS_ID),
              check(raises, RAISES_ID), check(skips, SKIPS_ID), check(agrees, AGREES_ID),
              check(disagrees, DISAGREES_ID)]
    results, _ = run(sub_spec(PLAIN[:7]), checks)

    # one result per behaviour, in spec order, whatever the checks did
    assert [r.id for r in results] == [b.id for b in PLAIN[:7]]
    assert [r.status for r in results] == [Status.TIMEOUT, Status.ERROR, Status.PASS, Status.ERROR,
                                           Status.SKIP, Status.PASS, Status.FAIL]
    by_id = {r.id: r for r in results}
    assert "SIGSEGV" in by_id[SEGFAULTS_ID].reason
    assert by_id[RAISES_ID].reason == "ValueError: the check itself broke"
    assert by_id[SKIPS_ID].reason == "the machine lacks what the check needs"
    assert "errno" in by_id[DISAGREES_ID].reason

    # the hung child and the leaked grandchild are gone, reaped, and their groups empty
    for name in ("hangs", "leaked"):
        pid, pgid = read_pid(name)
        assert not alive(pid), f"{name}: process {pid} still exists"
        assert group_members(pgid) == []


def test_a_check_with_several_behaviours_runs_once_and_judges_each() -> None:
    """One child, one observation, judged against each behaviour's own expectation."""
    a = PLAIN[0]
    same = next(b for b in PLAIN[1:] if expectation(b.id).describe() == expectation(a.id).describe())
    other = next(b for b in PLAIN[1:] if expectation(b.id).errno != expectation(a.id).errno)
    ids = [x.id for x in SPEC.behaviours if x.id in (a.id, same.id, other.id)]

    def observes_once(ctx: object) -> Observation:
        note_pid(f"ran-{os.getpid()}", os.getpid())
        return satisfying(expectation(a.id))

    results, _ = run(sub_spec([SPEC.behaviour(i) for i in ids]), [check(observes_once, other.id, same.id, a.id)])
    assert [r.id for r in results] == ids  # spec order, not the check's
    assert len(list(PIDS.glob("ran-*"))) == 1
    statuses = {r.id: r.status for r in results}
    assert statuses == {a.id: Status.PASS, same.id: Status.PASS, other.id: Status.FAIL}


def test_several_checks_of_one_behaviour_make_one_result_with_the_worst_verdict() -> None:
    b = PLAIN[0]

    def agrees_too(ctx: object) -> Observation:
        return satisfying(expectation(b.id))

    def contradicts(ctx: object) -> Observation:
        return contradicting(expectation(b.id))

    results, text = run(sub_spec([b]), [check(agrees_too, b.id), check(contradicts, b.id)])
    [result] = results
    assert (result.id, result.status, result.check) == (b.id, Status.FAIL, "agrees_too, contradicts")
    assert result.reason.startswith("contradicts: ")
    assert [(p.check, p.status) for p in result.parts] == [("agrees_too", Status.PASS),
                                                          ("contradicts", Status.FAIL)]
    [(_, line)] = ktap_grammar.parse(text).leaves()
    assert line.kind == "fail" and "(check contradicts)" in line.diagnostics[-1]
    [entry] = record(CTX, 0, ALL_OK, [], results)["results"]
    assert [c["status"] for c in entry["checks"]] == ["PASS", "FAIL"]


def test_a_behaviour_without_a_check_fails() -> None:
    covered, uncovered = PLAIN[0], PLAIN[1]
    results, text = run(sub_spec([covered, uncovered]), [check(agrees_with(covered.id), covered.id)])
    statuses = {r.id: r.status for r in results}
    assert statuses == {covered.id: Status.PASS, uncovered.id: Status.FAIL}
    assert Totals.of(results).exit_code == EXIT_FAIL
    doc = ktap_grammar.parse(text)
    failing = [t for _, t in doc.leaves() if t.description == uncovered.id]
    assert len(failing) == 1 and not failing[0].ok and failing[0].directive is None
    assert failing[0].reason == "no check covers this behaviour"


def test_a_check_naming_an_unknown_behaviour_fails() -> None:
    known = PLAIN[0]
    unknown = known.id + ".not-in-the-spec"
    results, _ = run(sub_spec([known]), [check(agrees_with(known.id), known.id, unknown)])
    statuses = {r.id: r.status for r in results}
    assert statuses == {unknown: Status.FAIL, known.id: Status.PASS}
    assert Totals.of(results).exit_code == EXIT_FAIL


def agrees_with(behaviour_id: str) -> Callable[[object], Observation]:
    def agrees_with_spec(ctx: object) -> Observation:
        return satisfying(expectation(behaviour_id))
    return agrees_with_spec


def test_only_selects_by_glob_on_behaviour_ids() -> None:
    a, b = PLAIN[0], PLAIN[1]
    checks = [check(agrees_with(a.id), a.id, b.id)]
    results, _ = run(sub_spec([a, b]), checks, only=[b.id])
    assert [r.id for r in results] == [b.id]
    prefix = a.id.rsplit(".", 1)[0] + ".*"
    expected = [x.id for x in (a, b) if x.id.startswith(prefix[:-1])]
    results, _ = run(sub_spec([a, b]), checks, only=[prefix])
    assert [r.id for r in results] == expected


# --- skips decided before the fork ---------------------------------------------------------

def test_a_failed_requirement_skips_without_forking() -> None:
    needy = next(b for b in SPEC.behaviours if b.requires and b.expectation_for(CTX.version))
    need = needy.requires[0]
    probes = {**ALL_OK, need: Probe(need, False, "absent on this test machine")}
    results, text = run(sub_spec([needy]), [check(must_not_run, needy.id)], probes)
    assert [(r.status, r.reason) for r in results] == [(Status.SKIP, f"needs {need}: absent on this test machine")]
    assert not (PIDS / "must_not_run").exists()
    assert ktap_grammar.parse(text).counts() == {"skip": 1}
    assert Totals.of(results).exit_code == EXIT_SKIP


def test_a_check_requirement_is_honoured_too() -> None:
    plain = PLAIN[0]
    probes = {**ALL_OK, "thp": Probe("thp", False, "no huge pages")}
    results, _ = run(sub_spec([plain]), [check(must_not_run, plain.id, requires=("thp",))], probes)
    assert [r.status for r in results] == [Status.SKIP]
    assert not (PIDS / "must_not_run").exists()


def test_no_move_support_skips_move_behaviours_with_the_probe_reason() -> None:
    move_b = PLAIN[0]
    other = next(b for b in SPEC.behaviours if not b.id.startswith("move.") and not b.requires
                 and b.expectation_for(CTX.version))
    reason = f"{SPEC.ioctl.name} not supported: feature bit absent"
    probes = {**ALL_OK, "move": Probe("move", False, reason)}
    def must_not_run_either(ctx: object) -> Observation:
        return must_not_run(ctx)

    # two checks of one behaviour, skipped alike: still the probe's reason, word for word
    results, _ = run(sub_spec([other, move_b]), [check(agrees_with(other.id), other.id),
                                                 check(must_not_run, move_b.id),
                                                 check(must_not_run_either, move_b.id)], probes)
    assert [(r.id, r.status) for r in results] == [(other.id, Status.PASS), (move_b.id, Status.SKIP)]
    assert results[1].reason == reason
    assert not (PIDS / "must_not_run").exists()


def test_a_behaviour_of_other_kernels_is_not_applicable() -> None:
    later = Version(CTX.version.major + 1, 0)
    b = dataclasses.replace(PLAIN[0], expect=tuple(dataclasses.replace(e, kernels=KernelRange(later, None))
                                                   for e in PLAIN[0].expect[:1]))
    results, _ = run(sub_spec([b]), [check(must_not_run, b.id)])
    assert results[0].status == Status.SKIP
    assert results[0].reason == f"not applicable on {CTX.release} (behaviour holds since {later})"


def test_an_unobservable_behaviour_is_skipped_with_the_spec_reason() -> None:
    b = next(b for b in SPEC.behaviours if b.unobservable and b.expectation_for(CTX.version)
             and not b.expectation_for(CTX.version).instead)
    results, _ = run(sub_spec([b]), [check(must_not_run, b.id)])
    assert results[0].status == Status.SKIP
    assert results[0].reason == " ".join(b.unobservable.split())
    assert not (PIDS / "must_not_run").exists()


# --- the judge -------------------------------------------------------------------------

def instead_behaviour() -> tuple[Behaviour, Expectation]:
    for b in SPEC.behaviours:
        exp = b.expectation_for(CTX.version)
        if exp and exp.instead:
            return b, exp
    pytest.skip("the spec documents no unreachable errno")


def test_unreachable_errno_is_an_expected_failure_when_the_other_errno_comes() -> None:
    b, exp = instead_behaviour()
    v = judge(satisfying(exp), exp, b.unobservable)
    assert v.status == Status.XFAIL
    assert v.reason.startswith(f"unreachable from user space: {exp.instead} comes first")
    assert " ".join(b.unobservable.split()) in v.reason


def test_unreachable_errno_that_the_kernel_returns_fails() -> None:
    b, exp = instead_behaviour()
    v = judge(dataclasses.replace(satisfying(exp), errno=exp.errno), exp, b.unobservable)
    assert v.status == Status.FAIL
    assert "unreachable" in v.reason


def test_only_the_keys_the_expectation_sets_are_compared() -> None:
    exp = next(e for b in SPEC.behaviours for e in b.expect if e.move is None and e.memory is not None)
    obs = dataclasses.replace(satisfying(exp), move=12345, move_before=0, wake="woken", huge="split")
    assert judge(obs, exp).status == Status.PASS


@pytest.mark.parametrize("key", ["move", "memory"])
def test_a_difference_in_one_key_fails_and_names_it(key: str) -> None:
    exp = next(e for b in SPEC.behaviours for e in b.expect if e.move == "-errno" and e.memory)
    obs = satisfying(exp)
    obs = dataclasses.replace(obs, move=obs.move_before) if key == "move" else \
        dataclasses.replace(obs, memory="something else")
    v = judge(obs, exp)
    assert v.status == Status.FAIL
    assert key in v.reason
    assert f"{key}=" in v.expected and f"{key}=" in v.observed


def test_a_key_the_check_did_not_observe_is_an_error_not_a_failure() -> None:
    exp = next(e for b in SPEC.behaviours for e in b.expect if e.memory)
    v = judge(dataclasses.replace(satisfying(exp), memory=None), exp)
    assert v.status == Status.ERROR
    assert "memory" in v.reason


# --- output -----------------------------------------------------------------------------

def test_ktap_parses_strictly_and_agrees_with_the_json_record() -> None:
    checks = [check(hangs, HANGS_ID, timeout=0.5, group="first"), check(raises, RAISES_ID, group="first"),
              check(skips, SKIPS_ID, group="second"), check(agrees, AGREES_ID, group="second"),
              check(disagrees, DISAGREES_ID, group="third")]
    b, _ = instead_behaviour()
    spec_ = sub_spec([x for x in PLAIN[:7] if x.id != LEAKS_ID and x.id != SEGFAULTS_ID] + [b])
    checks.append(check(agrees_with(b.id), b.id, group="third"))
    results, text = run(spec_, checks)

    doc = ktap_grammar.parse(text)
    data = json.loads(json.dumps(record(CTX, 0, ALL_OK, [], results)))
    # the same results, in the same order, with the same verdicts
    assert [(t.description, t.kind) for _, t in doc.leaves()] == \
        [(r["id"], r["status"].lower()) for r in data["results"]]
    assert [g for g, _ in doc.leaves()] == [r["group"] for r in data["results"]]
    assert doc.plan == len({r["group"] for r in data["results"]})
    # every failing result is explained just above its line
    for _, t in doc.leaves():
        if t.kind in ("fail", "timeout", "error"):
            assert t.diagnostics and t.diagnostics[-1].startswith(t.description + ": ")
    totals = data["totals"]
    assert doc.diagnostics[-1] == (f"Totals: pass:{totals['pass']} fail:{totals['fail']} xfail:{totals['xfail']} "
                                   f"xpass:0 skip:{totals['skip']} error:{totals['error']}")
    counts = doc.counts()
    assert totals["error"] == counts["error"] + counts["timeout"]  # TIMEOUT counts as error
    assert f"kernel: {CTX.release}" in doc.diagnostics
    assert data["kernel"]["release"] == os.uname().release
    assert {"id", "check", "group", "status", "expected", "observed", "reason", "duration"} <= \
        set(data["results"][0])


def test_what_a_check_prints_does_not_reach_the_ktap(capfd: pytest.CaptureFixture[str]) -> None:
    b = PLAIN[0]

    def chatty(ctx: object) -> Observation:
        print("ok 1 not a result of the run")
        os.write(1, b"not ok 2 nor this\n")
        return satisfying(expectation(b.id))

    writer = KtapWriter(sys.stdout)
    writer.header(1, [])
    results = harness.run(sub_spec([b]), [check(chatty, b.id)], CTX, ALL_OK, (), writer)
    out, err = capfd.readouterr()
    assert [r.status for r in results] == [Status.PASS]
    assert out == writer.text()
    assert ktap_grammar.parse(out).counts() == {"pass": 1}
    assert "not a result of the run" in err and "nor this" in err


@pytest.mark.parametrize(("statuses", "code"), [
    ([Status.PASS, Status.SKIP, Status.XFAIL], EXIT_PASS),
    ([Status.SKIP, Status.SKIP], EXIT_SKIP),
    ([Status.PASS, Status.FAIL], EXIT_FAIL),
    ([Status.PASS, Status.TIMEOUT], EXIT_FAIL),
    ([Status.SKIP, Status.ERROR], EXIT_FAIL),
])
def test_exit_status_follows_kselftest(statuses: list[Status], code: int) -> None:
    results = [harness.Result(f"id{i}", "c", "g", s) for i, s in enumerate(statuses)]
    assert Totals.of(results).exit_code == code


# --- signals -----------------------------------------------------------------------------

def test_sigterm_kills_the_running_check_and_restores(tmp_path: Path) -> None:
    """The parent gets SIGTERM while a check hangs: the check's group is
    killed, the code around the run still runs its cleanup, and the run
    ends with 128 + SIGTERM."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import contextlib, os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_harness as t
        from conformance import harness

        @contextlib.contextmanager
        def restoring():
            try:
                yield
            finally:
                open({str(tmp_path / "restored")!r}, "w").close()

        def hangs_forever(ctx):
            open({str(tmp_path / "child")!r}, "w").write(str(os.getpid()))
            time.sleep(3600)

        checks = [t.check(hangs_forever, t.HANGS_ID, timeout=600)]
        try:
            with restoring(), harness.interruptible():
                harness.run(t.sub_spec(t.PLAIN[:1]), checks, t.CTX, t.ALL_OK)
        except harness.Interrupted as exc:
            sys.exit(128 + exc.signum)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parent.parent)
    child = tmp_path / "child"
    pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (child.exists() and child.read_text()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before its check started"
        pid = int(child.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:  # a failing run must not outlive the test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid and alive(pid):
            os.killpg(pid, signal.SIGKILL)
    assert (tmp_path / "restored").exists()
    assert not alive(pid)
    assert group_members(pid) == []
