"""Random UFFDIO_MOVE calls on random layouts, each predicted by the spec
(conformance/oracle.py) and made on the running kernel; any disagreement is
shrunk by Hypothesis to a minimal case and printed with a standalone C
program that reproduces it.

Every case is built for real in a worker process (a small process started
for the run, replaced when a case hangs or kills it): the mappings at
chosen offsets inside a reserved arena, each page in its state, the call,
then every page read back.  A disagreement is a bug in the spec or a
finding about the kernel; the spec is the place for both.  Exit status 0
when every case agreed, 1 on any disagreement, 4 when the kernel has no
UFFDIO_MOVE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spec import load
from spec.model import Spec
from tools.output import write_atomic

from .layout import Call, Layout
from .oracle import OracleError, Prediction, predict
from .realize import Observed
from .worker import Ready, Worker

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE, EXIT_SKIP = 0, 1, 2, 4
DEFAULT_CASES = 1000
MAX_FINDINGS = 8      # distinct disagreements shrunk in one run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", metavar="N", type=int, default=DEFAULT_CASES,
                        help=f"cases to generate (default {DEFAULT_CASES})")
    parser.add_argument("--seed", metavar="S", type=int, default=0, help="the random seed (default 0)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the run as JSON to FILE")
    parser.add_argument("--repro", metavar="DIR", type=Path,
                        help="write each disagreement's C program into DIR")
    parser.add_argument("--with", dest="grant", metavar="OPTS", action="append", default=[],
                        help="allow system changes, comma-separated: swap (a swap file for the run)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=10.0,
                        help="seconds one case may take before its worker is replaced (default 10)")


class Disagreement(Exception):
    """Raised inside the Hypothesis test so that Hypothesis shrinks the case."""


@dataclass(frozen=True)
class Verdict:
    prediction: Prediction
    observed: Observed

    @property
    def unrealized(self) -> bool:
        return self.observed.unrealized is not None

    @property
    def differences(self) -> tuple[str, ...]:
        p, o = self.prediction, self.observed
        if self.unrealized:
            return ()
        diffs = []
        if not p.allows(o.errno):
            diffs.append("errno")
        if p.move_stated and p.move != o.move:
            diffs.append("move")
        if p.pages != o.pages:
            diffs.append("pages")
        return tuple(diffs)

    @property
    def signature(self) -> str:
        """What kind of disagreement: the two answers and what differs."""
        return (f"spec {self.prediction.errno or 0}, kernel {self.observed.errno or 0} "
                f"[{', '.join(self.differences)}]")


@dataclass
class Finding:
    signature: str
    layout: Layout
    call: Call
    verdict: Verdict
    count: int = 1
    flaky: bool = False


@dataclass
class Run:
    """The counts of a run: what the fuzzer reports."""

    cases: int = 0                 # generated and run
    shrink_runs: int = 0           # extra runs while shrinking
    agreed: int = 0
    disagreed: int = 0
    unrealized: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)   # cases built with a page in each state
    findings: dict[str, Finding] = field(default_factory=dict)
    seconds: float = 0.0


class Fuzzer:
    def __init__(self, spec: Spec, worker: Worker, ready: Ready) -> None:
        self.spec, self.worker, self.ready = spec, worker, ready
        self.flags = tuple(f.value for fs in spec.flags for f in fs.values)

    def judge(self, layout: Layout, call: Call) -> Verdict:
        ready = self.worker.ready or self.ready
        prediction = predict(self.spec, ready.machine, layout, call, ready.arena)
        return Verdict(prediction, self.worker.run(layout, call))

    def explore(self, cases: int, seed: int, run: Run | None = None) -> Run:
        """Generate `cases` cases in rounds; a round ends at a new kind of
        disagreement, which Hypothesis then shrinks, and the next round
        goes on with a seed of its own."""
        from .cases import cases as case_strategy

        run = run or Run()
        start = time.monotonic()
        strategy = case_strategy(self.ready.features, self.ready.machine.geometry, self.flags)
        budget, number = cases, 0
        while budget > 0:
            round_ = _Round(self, run)
            round_.run(strategy, budget, seed * 1000 + number)
            budget -= max(round_.generated, 1)
            number += 1
            if round_.target is None:
                break
        run.seconds += time.monotonic() - start
        return run

    def tally(self, run: Run, layout: Layout, call: Call, verdict: Verdict) -> None:
        run.cases += 1
        if verdict.unrealized:
            run.unrealized[_reason(verdict.observed.unrealized or "")] += 1
            return
        run.states.update({s for v in layout.vmas for s in v.pages})
        d = verdict.prediction.decision
        run.decided[f"{d.step.stage}/{d.step.condition}" if d.step else "success"] += 1
        if not verdict.differences:
            run.agreed += 1
            return
        run.disagreed += 1
        sig = verdict.signature
        if sig in run.findings:
            run.findings[sig].count += 1
        else:
            run.findings[sig] = Finding(sig, layout, call, verdict)


class _Round:
    """One Hypothesis run: generate until a new kind of disagreement, then
    shrink it, keeping the smallest case that still disagrees alike."""

    def __init__(self, fuzzer: Fuzzer, run: Run) -> None:
        self.fuzzer, self.run_ = fuzzer, run
        self.target: str | None = None
        self.generated = 0

    def test(self, case: tuple[Layout, Call]) -> None:
        layout, call = case
        verdict = self.fuzzer.judge(layout, call)
        run = self.run_
        if self.target is None:
            self.generated += 1
            self.fuzzer.tally(run, layout, call, verdict)
            if verdict.differences and run.findings[verdict.signature].count == 1 and \
                    len(run.findings) <= MAX_FINDINGS:
                self.target = verdict.signature
        else:
            run.shrink_runs += 1
        if self.target is not None and verdict.differences and verdict.signature == self.target:
            self._keep(layout, call, verdict)
            raise Disagreement(self.target)  # one place: Hypothesis tells failures apart by where they rise

    def _keep(self, layout: Layout, call: Call, verdict: Verdict) -> None:
        assert self.target is not None
        finding = self.run_.findings[self.target]
        finding.layout, finding.call, finding.verdict = layout, call, verdict

    def run(self, strategy: Any, budget: int, seed: int) -> None:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hypothesis_seed
        from hypothesis.errors import Flaky

        test = settings(max_examples=budget, database=None, deadline=None, derandomize=False,
                        phases=[Phase.generate, Phase.shrink], report_multiple_bugs=False,
                        suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                        print_blob=False)(hypothesis_seed(seed)(given(strategy)(self.test)))
        try:
            test()
        except Disagreement:
            pass
        except Flaky:
            if self.target is not None:
                self.run_.findings[self.target].flaky = True


def _reason(text: str) -> str:
    """An unrealized case's reason without its addresses, to count alike ones together."""
    words = [w for w in text.split() if not any(c.isdigit() for c in w.strip(",:()"))]
    return " ".join(words[:8])


# --- output ------------------------------------------------------------------------

def describe_finding(n: int, f: Finding, ready: Ready, spec: Spec) -> list[str]:
    geo = ready.machine.geometry
    p, o = f.verdict.prediction, f.verdict.observed
    modes = {fl.value: fl.name for fs in spec.flags for fl in fs.values}
    labels = f.layout.labels()
    lines = [f"{n}. {f.signature}: {f.count} case{'s' * (f.count != 1)}"
             + (" (flaky: the minimal case did not always reproduce)" if f.flaky else "") + "; minimal case:"]
    lines += [f"   {x}" for x in f.layout.describe(geo)]
    lines.append(f"   call: {f.call.describe(f.layout, geo, modes)}")
    lines.append(f"   spec:   errno={p.errno or 0} move={_move(p.move, p.move_stated)} "
                 f"({p.decision.describe()})")
    lines.append(f"   kernel: errno={o.errno or 0} move={_move(o.move, True)}")
    for label, want, got in zip(labels, p.pages, o.pages, strict=True):
        if want != got:
            lines.append(f"   page {label}: spec {want}, kernel {got}")
    return lines


def _move(value: int | None, stated: bool) -> str:
    if not stated:
        return "(not stated)"
    return "untouched" if value is None else str(value)


def summary(run: Run, ready: Ready, spec: Spec, repro: dict[str, Path]) -> str:
    rate = run.cases / run.seconds if run.seconds else 0.0
    realized = run.cases - sum(run.unrealized.values())
    lines = [f"uffd-uabi fuzz: Linux {os.uname().release}, spec {spec.path} ({spec.date})",
             f"cases: {run.cases} run, {realized} built as described, {run.agreed} agreed, "
             f"{run.disagreed} disagreed; {run.shrink_runs} more while shrinking",
             f"time: {run.seconds:.1f} s, {rate:.0f} cases/s",
             f"machine: {', '.join(ready.features.names) or 'no optional page states'}",
             "page states built (cases): " + ", ".join(f"{s} {n}" for s, n in run.states.most_common()),
             "decided by:"]
    lines += [f"  {n:6d}  {what}" for what, n in sorted(run.decided.items(), key=lambda kv: -kv[1])]
    if run.unrealized:
        lines.append("not built as described (not counted as disagreements):")
        lines += [f"  {n:6d}  {why}" for why, n in run.unrealized.most_common()]
    if run.findings:
        lines.append("disagreements (each a bug in the spec or a kernel finding, to record in the spec):")
        for n, f in enumerate(run.findings.values(), 1):
            lines += describe_finding(n, f, ready, spec)
            if f.signature in repro:
                lines.append(f"   C program: {repro[f.signature]}")
    else:
        lines.append("disagreements: none")
    return "\n".join(lines) + "\n"


def record(run: Run, ready: Ready, spec: Spec, seed: int, programs: dict[str, str]) -> dict[str, Any]:
    def verdict(v: Verdict) -> dict[str, Any]:
        p, o = v.prediction, v.observed
        return {"spec": {"errno": p.errno, "move": p.move, "move_stated": p.move_stated, "pages": list(p.pages),
                         "decided_by": p.decision.describe()},
                "kernel": {"errno": o.errno, "move": o.move, "pages": list(o.pages)}}

    return {
        "kernel": os.uname().release,
        "spec": str(spec.path),
        "spec_date": spec.date,
        "seed": seed,
        "features": list(ready.features.names),
        "cases": run.cases,
        "agreed": run.agreed,
        "disagreed": run.disagreed,
        "shrink_runs": run.shrink_runs,
        "unrealized": dict(run.unrealized),
        "seconds": round(run.seconds, 3),
        "cases_per_second": round(run.cases / run.seconds, 1) if run.seconds else None,
        "decided_by": dict(run.decided),
        "page_states": dict(run.states),
        "disagreements": [{"signature": f.signature, "count": f.count, "flaky": f.flaky,
                           "layout": f.layout.as_dict(), "call": f.call.as_dict(),
                           **verdict(f.verdict), "c_program": programs.get(f.signature)}
                          for f in run.findings.values()],
    }


def programs_of(run: Run, ready: Ready, spec: Spec) -> dict[str, str]:
    from .reproducer import program

    return {f.signature: program(spec, ready.machine.geometry, ready.arena, f.layout, f.call,
                                 f.verdict.prediction, f.verdict.observed, os.uname().release,
                                 f"UFFDIO_MOVE: {f.signature}")
            for f in run.findings.values()}


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("uffd-uabi fuzz: needs the hypothesis package (pip install hypothesis)", file=sys.stderr)
        return EXIT_USAGE
    if args.cases < 1:
        print("uffd-uabi fuzz: --cases must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    options = sorted({o.strip() for g in args.grant for o in g.split(",") if o.strip()})

    from .context import make_context
    from .harness import subreaper
    from .system import prepared

    ctx = make_context(spec, frozenset(options))
    with prepared(ctx), subreaper(), Worker(args.spec, options, args.timeout) as worker:
        try:
            ready = worker.start()
        except (EOFError, TimeoutError, OSError) as exc:
            print(f"uffd-uabi fuzz: the worker did not start: {exc}", file=sys.stderr)
            return EXIT_USAGE
        move = ready.probes.get("move", "no: no probe of UFFDIO_MOVE")
        if not move.startswith("ok"):
            print(f"uffd-uabi fuzz: {move.split(': ', 1)[-1]}", file=sys.stderr)
            return EXIT_SKIP
        fuzzer = Fuzzer(spec, worker, ready)
        try:
            result = fuzzer.explore(args.cases, args.seed)
        except OracleError as exc:
            print(f"uffd-uabi fuzz: the spec cannot be walked: {exc}", file=sys.stderr)
            return EXIT_USAGE
    programs = programs_of(result, ready, spec)
    paths: dict[str, Path] = {}
    if args.repro:
        for n, (sig, text) in enumerate(programs.items(), 1):
            paths[sig] = args.repro / f"disagreement-{n}.c"
            write_atomic(paths[sig], text)
    sys.stdout.write(summary(result, ready, spec, paths))
    if args.json:
        write_atomic(args.json, json.dumps(record(result, ready, spec, args.seed, programs), indent=2) + "\n")
    return EXIT_DISAGREE if result.findings else EXIT_OK
