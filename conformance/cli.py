"""Check the running kernel against every behaviour of the spec.

Each check runs in a forked child with a timeout; the kernel's answers are
judged against the spec's expectation for the running kernel.  KTAP on
stdout (as kselftest prints it), a summary on stderr.  Exit status 0 when
everything that ran passed (skips and expected failures allowed), 1 on any
failure, timeout or error, 4 when everything was skipped.  A behaviour no
check covers is a failure, never a skip.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from spec import load
from spec.model import Spec
from tools.output import write_atomic

from . import harness
from .ktap import KtapWriter
from .registry import REGISTRY, Check
from .report import Totals, record, summary

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", metavar="GLOB", action="append", default=[],
                        help="run only the behaviours whose id matches GLOB (fnmatch; repeatable)")
    parser.add_argument("--with", dest="grant", metavar="OPTS", action="append", default=[],
                        help="allow system changes a check needs, comma-separated (e.g. swap,ksm); "
                             "they are undone when the run ends")
    parser.add_argument("--list", action="store_true", help="list the checks and their behaviours, run nothing")
    parser.add_argument("--ktap", metavar="FILE", type=Path, help="also write the KTAP output to FILE")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the results as JSON to FILE")


def registered() -> list[Check]:
    from . import checks  # noqa: F401  (importing them registers them)
    return list(REGISTRY)


def listing(spec: Spec, checks: Sequence[Check], only: Sequence[str]) -> int:
    known = {b.id for b in spec.behaviours}
    for c in checks:
        if harness.selected(c.behaviours, only):
            ids = ", ".join(i if i in known else f"{i} (not in the spec)" for i in c.behaviours)
            print(f"{c.group}/{c.name}: {ids}")
    covered = {i for c in checks for i in c.behaviours}
    missing = [b.id for b in spec.behaviours if b.id not in covered and harness.selected([b.id], only)]
    for i in missing:
        print(f"(no check): {i}")
    unknown = [i for c in checks for i in c.behaviours if i not in known]
    return 1 if missing or unknown else 0


def options_of(grants: Sequence[str]) -> frozenset[str]:
    return frozenset(o.strip() for g in grants for o in g.split(",") if o.strip())


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    checks = registered()
    if args.list:
        return listing(spec, checks, args.only)
    items = harness.plan(spec, checks, args.only)
    if not items:
        print(f"uffd-uabi conform: no behaviour matches {' '.join(args.only)}", file=sys.stderr)
        return EXIT_USAGE
    options = options_of(args.grant)

    from .context import make_context
    from .probes import api_features, probe_all
    from .system import OPTIONS, prepared

    if options - OPTIONS:
        print(f"uffd-uabi conform: unknown --with {','.join(sorted(options - OPTIONS))} "
              f"(known: {','.join(sorted(OPTIONS))})", file=sys.stderr)
        return EXIT_USAGE

    ctx = make_context(spec, options)
    writer = KtapWriter(sys.stdout)
    try:
        with prepared(ctx), harness.interruptible():
            probes = probe_all(ctx)
            features = api_features(ctx)
            writer.header(len(harness.groups(items)), [
                f"kernel: {ctx.release}",
                f"features: {features:#x}",
                *(f"probe {name}: {'ok' if p.ok else 'no'}: {p.detail}" for name, p in probes.items()),
                f"options: {','.join(sorted(options)) or 'none'}",
                f"spec: {spec.path} ({spec.date})",
            ])
            results = harness.run(spec, checks, ctx, probes, args.only, writer)
    except harness.Interrupted as exc:
        writer.diagnostic(f"interrupted by {exc}: the running check was killed and the system restored")
        print(f"uffd-uabi conform: interrupted by {exc}", file=sys.stderr)
        return 128 + exc.signum
    totals = Totals.of(results)
    writer.totals(totals)
    if args.ktap:
        write_atomic(args.ktap, writer.text())
    if args.json:
        write_atomic(args.json, json.dumps(record(ctx, features, probes, options, results), indent=2) + "\n")
    sys.stderr.write(summary(results, ctx.release))
    return totals.exit_code
