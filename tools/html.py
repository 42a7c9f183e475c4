"""Build the HTML documentation with Sphinx: the pages of docs/, with every
uABI fact rendered from the spec by the project's Sphinx extension
(tools/sphinxext.py) and the last conformance results beside each behaviour.

Warnings are errors and every reference is checked (sphinx-build -W -n), so
a dangling link fails the build.  The spec is loaded before Sphinx starts: a
broken spec gives FILE:LINE:COL and exit status 2 and writes nothing.  Sphinx
builds into a fresh directory beside --out, which replaces --out only when
the build succeeded, so a failed build leaves the previous pages intact."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from spec import load

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="build/html",
                        help="where to write the pages (default: build/html)")
    parser.add_argument("--results", metavar="PATH",
                        help="the conformance results to show (default: build/conformance/results.json "
                             "of the project, if it exists)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Sphinx's progress")


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)  # a SpecError here is the CLI's FILE:LINE:COL, exit 2
    overrides = {"uabi_spec": str(Path(args.spec).resolve()), "nitpicky": True}
    if args.results:
        overrides["uabi_results"] = str(Path(args.results).resolve())
    out = Path(args.out)
    if not build(out, overrides, verbose=args.verbose):
        print(f"html: the build failed; {out} is unchanged", file=sys.stderr)
        return 1
    print(f"{out / 'index.html'}: {spec.ioctl.name}, {len(spec.behaviours)} behaviours")
    return 0


def build(out: Path, overrides: dict[str, object], verbose: bool = False) -> bool:
    """Run Sphinx (-W -n) into a temporary directory, then put it in place."""
    # Imported here: every `uffd-uabi` command imports this module to list it.
    from sphinx.application import Sphinx
    from sphinx.errors import SphinxError
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # As sphinx-build does: docutils' registries are process-wide, and a
        # second build in one process must not find the first one's directives.
        with patch_docutils(ROOT), docutils_namespace():
            app = Sphinx(DOCS, ROOT, tmp / "html", tmp / "doctrees", "html", confoverrides=overrides,
                         status=sys.stdout if verbose else None, warning=sys.stderr,
                         freshenv=True, warningiserror=True)
            app.build()
            ok = app.statuscode == 0
    except SphinxError as exc:
        print(f"html: {exc.category}: {exc}", file=sys.stderr)
        ok = False
    try:
        if ok:
            replace_tree(tmp / "html", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def replace_tree(new: Path, out: Path) -> None:
    """Swap `new` in for `out`: by renames, so no reader sees a mix of two builds."""
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(old / out.name)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old)
