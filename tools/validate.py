"""Check a spec: YAML syntax, the schema, then the rules the schema cannot
express (unique names, resolving references, bit widths, offsets, versions).
Prints nothing but a one-line summary on success; on the first error,
FILE:LINE:COL: message and exit status 2."""

from __future__ import annotations

import argparse

from spec import load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    if not args.quiet:
        print(f"{spec.path}: ok: {spec.ioctl.name} = {spec.ioctl.request:#010x}, "
              f"struct {spec.struct.name} {spec.struct.size} bytes, "
              f"{sum(len(f.values) for f in spec.flags)} flags, {len(spec.errors)} errors, "
              f"{len(spec.behaviours)} behaviours")
    return 0
