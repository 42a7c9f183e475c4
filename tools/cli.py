"""`uffd-uabi`: one command, a subcommand per job, all reading one spec.

Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires
them up and turns a SpecError into the one-line ``FILE:LINE:COL: message``
and exit status 2 that editors and CI understand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from spec import DEFAULT_SPEC, SpecError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("tools.validate", "check a spec against the schema and its own rules"),
    "man": ("tools.manpage", "write the man pages (roff)"),
    "html": ("tools.html", "build the HTML documentation with Sphinx"),
    "conform": ("conformance.cli", "check the running kernel against every behaviour of the spec"),
    "header": ("tools.header", "compare a C header with the spec"),
    "diff": ("tools.specdiff", "classify the changes between two specs"),
    "matrix": ("conformance.matrix", "run the conformance suite on other kernels in QEMU"),
    "bench": ("tools.bench", "measure UFFDIO_MOVE against UFFDIO_COPY"),
    "fuzz": ("conformance.fuzz", "compare the spec's predictions with the kernel on random calls"),
}

EXIT_SPEC_ERROR = 2


def add_spec_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", metavar="PATH", default=str(DEFAULT_SPEC),
        help="the spec to read (default: the bundled spec/uffdio_move.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uffd-uabi",
        description="The UFFDIO_MOVE uABI spec and the tools that read it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built yet: the command is simply absent
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        if getattr(module, "TAKES_SPEC", True):
            add_spec_argument(p)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_SPEC_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
