"""Write the man pages of the spec, in the Linux man-pages project's style.

--out DIR writes DIR/man2const/UFFDIO_MOVE.2const (the layout of man-pages
6.9 and later) and DIR/man2/ioctl_userfaultfd.2.UFFDIO_MOVE, the .SS
subsection for the older monolithic ioctl_userfaultfd(2) page.  --into PAGE
puts that subsection into such a page (replacing an existing one, or after
the last UFFDIO_* subsection), rewrites the page atomically and prints the
change as a unified diff; with --dry-run it only prints the diff.

The .TH date is the spec's date, or SOURCE_DATE_EPOCH's (UTC) when set, so
that the same spec always gives the same bytes.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from spec import load
from spec.model import Spec

from .manlint import read_page
from .output import write_atomic
from .roff import Roff, monolithic_page, page_date

SEPARATOR = '.\\"'  # the empty comment man-pages puts between subsections


class PageError(Exception):
    """The page given to --into is not one the subsection can go into."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", type=Path,
                       help="write the 2const page and the subsection under DIR")
    where.add_argument("--into", metavar="PAGE", type=Path,
                       help="insert or replace the subsection in a monolithic ioctl_userfaultfd.2")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --into: print the diff and leave the page alone")


def outputs(spec: Spec, roff: Roff) -> dict[Path, str]:
    """Relative path -> page text, all rendered before anything is written."""
    holder = monolithic_page(spec)
    name = spec.ioctl.name
    return {
        Path("man2const") / f"{name}.2const": roff.page(),
        Path(f"man{holder.section}") / f"{holder.page}.{holder.section}.{name}": roff.subsection(),
    }


def run(args: argparse.Namespace) -> int:
    if args.dry_run and args.into is None:
        print("uffd-uabi man: --dry-run goes with --into", file=sys.stderr)
        return 2
    spec = load(args.spec)
    try:
        roff = Roff(spec, page_date(spec))
    except ValueError as exc:
        print(f"uffd-uabi man: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        pages = outputs(spec, roff)
        for rel, text in pages.items():
            write_atomic(args.out / rel, text)
            print(args.out / rel)
        return 0
    try:
        return into(args.into, roff.subsection(), spec, args.dry_run)
    except (OSError, UnicodeDecodeError, PageError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"uffd-uabi man: {args.into}: {reason}", file=sys.stderr)
        return 1


def into(page: Path, fragment: str, spec: Spec, dry_run: bool) -> int:
    if page.suffix == ".gz":
        raise PageError("a compressed page: gunzip it first, --into rewrites it in place")
    old = read_page(page)
    new = splice(old, fragment, spec.ioctl.name, spec.ioctl.type_name + "_")
    sys.stdout.writelines(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), str(page), str(page)))
    if new != old and not dry_run:
        write_atomic(page, new)
    return 0


def splice(page: str, fragment: str, name: str, family: str) -> str:
    """The page with `fragment` as its .SS `name`: in place of an existing
    one, else after the last .SS of the `family` (UFFDIO_*), as upstream
    ordered the requests.  The comment separators between subsections stay."""
    lines = page.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    heads = [i for i, line in enumerate(lines) if line.startswith((".SS", ".SH"))]
    own = [i for i in heads if subsection_name(lines[i]) == name]
    if len(own) > 1:
        raise PageError(f"{len(own)} subsections .SS {name}: fix the page by hand")
    new = fragment.splitlines(keepends=True)
    if own:
        start = own[0]
        end = _trim_separators(lines, start, _next_heading(heads, start, len(lines)))
        return "".join(lines[:start] + new + lines[end:])
    kin = [i for i in heads if (subsection_name(lines[i]) or "").startswith(family)]
    if not kin:
        raise PageError(f"no .SS {family}* subsection: not a monolithic ioctl_userfaultfd(2) page")
    end = _next_heading(heads, kin[-1], len(lines))
    if lines[end - 1].strip() == SEPARATOR:
        new.append(SEPARATOR + "\n")
    return "".join(lines[:end] + new + lines[end:])


def subsection_name(line: str) -> str | None:
    """"UFFDIO_WRITEPROTECT" for '.SS UFFDIO_WRITEPROTECT (Since Linux 5.7)'."""
    words = line.split()
    if len(words) < 2 or words[0] != ".SS":
        return None
    return words[1].strip('"')


def _next_heading(heads: list[int], after: int, default: int) -> int:
    return next((i for i in heads if i > after), default)


def _trim_separators(lines: list[str], start: int, end: int) -> int:
    while end > start + 1 and lines[end - 1].strip() == SEPARATOR:
        end -= 1
    return end
