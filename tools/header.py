"""Compare the spec with a real C header: every named constant the spec
defines, the size of every struct, the offset, size and signedness of every
field, as the C compiler computes them (through cffi) against the header.

A spec can be right and the header wrong, or the reverse; either way a user
who compiles against the header gets what the header says, so the two must
agree.  The header is the installed one (default), a file or include
directory (--header), or a linux-libc-dev package of another kernel version
downloaded from Debian's registry (--debian 6.12, or a suite name).

Exit status: 0 everything matches, 1 a mismatch, 3 items absent from the
header (and no mismatch: an older header), 2 the header cannot be used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from spec import Spec, load
from spec.model import CType
from tools import cprobe, debian
from tools.output import write_atomic

EXIT_MATCH, EXIT_MISMATCH, EXIT_ERROR, EXIT_ABSENT = 0, 1, 2, 3
MATCH, MISMATCH, ABSENT = "match", "MISMATCH", "absent"
PRELUDE = "linux/ioctl.h"  # the _IOC macros, which the header expects its user to have included


@dataclass(frozen=True)
class Row:
    item: str
    spec: int | bool
    header: int | bool | str | None  # None: absent; a str explains a value that is not one
    verdict: str
    unit: str  # value (shown in hex), bytes, signedness

    def shown(self, value: int | bool | str | None) -> str:
        if value is None:
            return "absent"
        if isinstance(value, str):
            return value
        if self.unit == "signedness":
            return "signed" if value else "unsigned"
        if self.unit == "value":
            return f"{value:#x}" if value >= 0 else str(value)
        return str(value)


@dataclass(frozen=True)
class Source:
    label: str
    include_dirs: tuple[Path, ...]
    path: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--header", metavar="PATH", type=Path,
                       help="a header file, or an include directory (a kernel tree's include/uapi, "
                            "an extracted linux-libc-dev); default: the installed header")
    where.add_argument("--debian", metavar="VERSION",
                       help="the header of Debian's linux-libc-dev VERSION (e.g. 6.12) or of a suite "
                            f"({', '.join(s.name for s in debian.SUITES)}), downloaded once into the cache")
    parser.add_argument("--cache", metavar="DIR", type=Path, default=debian.DEFAULT_CACHE,
                        help="where --debian keeps packages (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-",
                        help="write the comparison as JSON to PATH (or standard output)")
    parser.add_argument("--problems", action="store_true",
                        help="list only the items that do not match")


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    try:
        with _source(args, spec.header) as source:
            answers = cprobe.ask(questions(spec), (PRELUDE, spec.header), source.include_dirs)
    except (cprobe.HeaderError, debian.FetchError) as exc:
        print(f"uffd-uabi header: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rows = compare(spec, answers)
    status = exit_status(rows)
    if args.json:
        text = json.dumps(report(spec, source, rows, status), indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            write_atomic(Path(args.json), text)
    if args.json != "-":
        print(table(spec, source, rows, args.problems), end="")
    return status


# --- what to ask, and what the answers mean ------------------------------------

def questions(spec: Spec) -> list[cprobe.Question]:
    out = [cprobe.macro_value(name) for name in spec.values()]
    for s in spec.structs:
        out.append(cprobe.struct_size(s.name))
        for f in s.fields:
            out += [cprobe.field_offset(s.name, f.name), cprobe.field_size(s.name, f.name)]
            if _is_integer(f.ctype):
                out.append(cprobe.field_signed(s.name, f.name))
    return out


def _is_integer(ctype: CType) -> bool:
    """Signedness is a question for scalar members only."""
    return ctype.struct is None and ctype.count == 1 and "[" not in ctype.name


def compare(spec: Spec, answers: dict[str, cprobe.Answer]) -> list[Row]:
    rows = []
    for name, value in spec.values().items():
        got = answers[cprobe.macro_value(name).key]
        if isinstance(got, cprobe.Rejected):
            rows.append(Row(name, value, f"defined, but not a constant ({got.message})", MISMATCH, "value"))
        else:
            rows.append(_row(name, value, got, "value"))
    for s in spec.structs:
        key = cprobe.struct_size(s.name).key
        size = answers[key]
        struct_there = not isinstance(size, cprobe.Rejected)
        rows.append(_row(key, s.size, size if struct_there else None, "bytes"))
        for f in s.fields:
            questions = [(cprobe.field_offset(s.name, f.name), f.offset, "bytes"),
                         (cprobe.field_size(s.name, f.name), f.size, "bytes")]
            if _is_integer(f.ctype):
                questions.append((cprobe.field_signed(s.name, f.name), f.ctype.signed, "signedness"))
            field_there = not isinstance(answers[questions[0][0].key], cprobe.Rejected)
            for q, want, unit in questions:
                got = answers[q.key]
                if not struct_there:  # an older header: the whole struct is absent
                    rows.append(_row(q.key, want, None, unit))
                elif not field_there:  # the header's struct is another one
                    rows.append(Row(q.key, want, "no such field", MISMATCH, unit))
                elif isinstance(got, cprobe.Rejected):
                    rows.append(Row(q.key, want, "not an integer", MISMATCH, unit))
                else:
                    rows.append(_row(q.key, want, bool(got) if unit == "signedness" else got, unit))
    return rows


def _row(item: str, want: int | bool, got: cprobe.Answer | bool, unit: str) -> Row:
    assert not isinstance(got, cprobe.Rejected)
    if got is None:
        return Row(item, want, None, ABSENT, unit)
    return Row(item, want, got, MATCH if got == want else MISMATCH, unit)


def exit_status(rows: list[Row]) -> int:
    verdicts = {r.verdict for r in rows}
    if MISMATCH in verdicts:
        return EXIT_MISMATCH
    if ABSENT in verdicts:
        return EXIT_ABSENT
    return EXIT_MATCH


def absent_names(spec: Spec, rows: list[Row]) -> list[str]:
    """The absent items, a missing struct standing for its fields."""
    absent = {r.item for r in rows if r.verdict == ABSENT}
    out = [name for name in spec.values() if name in absent]
    out += [f"struct {s.name}" for s in spec.structs if cprobe.struct_size(s.name).key in absent]
    return out


# --- output ----------------------------------------------------------------------

def table(spec: Spec, source: Source, rows: list[Row], problems_only: bool = False) -> str:
    shown = [r for r in rows if r.verdict != MATCH] if problems_only else rows
    lines = [f"spec:   {spec.path}", f"header: {source.label}", ""]
    if shown:
        cells = [("item", "spec", "header", "verdict")]
        cells += [(r.item, r.shown(r.spec), r.shown(r.header), r.verdict) for r in shown]
        widths = [max(len(c[i]) for c in cells) for i in range(3)]
        lines += [f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]}" for c in cells]
        lines.append("")
    counts = _counts(rows)
    lines.append(f"{len(rows)} items: {counts[MATCH]} match, {counts[MISMATCH]} MISMATCH, "
                 f"{counts[ABSENT]} absent from this header")
    missing = absent_names(spec, rows)
    if missing:
        # Wrapped between names: "struct uffdio_move" stays on one line.
        text = "absent from this header: " + ", ".join(m.replace(" ", "\0") for m in missing)
        lines += [line.replace("\0", " ") for line in textwrap.wrap(text, width=100, subsequent_indent="  ")]
    return "\n".join(lines) + "\n"


def report(spec: Spec, source: Source, rows: list[Row], status: int) -> dict[str, object]:
    return {
        "spec": spec.path,
        "header": {"label": source.label, "path": str(source.path)},
        "items": [asdict(r) for r in rows],
        "counts": _counts(rows),
        "absent": absent_names(spec, rows),
        "exit": status,
    }


def _counts(rows: list[Row]) -> dict[str, int]:
    return {v: sum(r.verdict == v for r in rows) for v in (MATCH, MISMATCH, ABSENT)}


# --- where the header comes from ---------------------------------------------------

@contextlib.contextmanager
def _source(args: argparse.Namespace, header: str) -> Iterator[Source]:
    if args.header is not None and not args.header.exists():
        raise cprobe.HeaderError(f"{args.header}: no such file or directory")
    if args.debian:
        yield _debian(args.debian, args.cache, header)
    elif args.header is not None and args.header.is_file():
        with tempfile.TemporaryDirectory(prefix="uffd-uabi-header-") as tmp:
            # <linux/userfaultfd.h> must open the given file, while
            # <linux/types.h> and <linux/ioctl.h> still come from the system.
            target = Path(tmp) / header
            target.parent.mkdir(parents=True)
            shutil.copyfile(args.header, target)
            try:
                yield Source(str(args.header), (Path(tmp),), args.header.resolve())
            except cprobe.HeaderError as exc:  # name the user's file, not the copy
                raise cprobe.HeaderError(str(exc).replace(str(target), str(args.header))) from None
    elif args.header is not None:
        dirs = include_dirs(args.header, header)
        path = cprobe.resolve(header, dirs)
        yield Source(str(path), dirs, path)
    else:
        path = cprobe.resolve(header)
        yield Source(f"{path} (installed{_package_of(path)})", (), path)


def include_dirs(root: Path, header: str) -> tuple[Path, ...]:
    """The include directories of a tree holding the header: the tree itself,
    its include/uapi (a kernel source tree) or usr/include (an extracted
    linux-libc-dev, whose <asm/...> sits under the multiarch directory).
    Absolute, for the compiler runs elsewhere."""
    root = root.resolve()
    for base in (root, root / "include" / "uapi", root / "usr" / "include"):
        if (base / header).is_file():
            arch = cprobe.multiarch()
            extra = base / arch if arch else None
            return (base,) + ((extra,) if extra is not None and extra.is_dir() else ())
    raise cprobe.HeaderError(f"{root}: no {header} in it, its include/uapi or its usr/include")


def _debian(wanted: str, cache: Path, header: str) -> Source:
    suite = debian.suite_named(wanted)
    pkg = debian.resolve("linux-libc-dev", None if suite else wanted, cache,
                         suite=suite.name if suite else None)
    tree = debian.extract(pkg, cache)
    dirs = include_dirs(tree, header)
    return Source(f"{pkg}: {dirs[0] / header}", dirs, dirs[0] / header)


def _package_of(path: Path) -> str:
    """", linux-libc-dev 6.1.187-1" when dpkg knows the file."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", str(path)], capture_output=True, text=True)
        if owner.returncode != 0:
            return ""
        name = owner.stdout.split(": ", 1)[0]  # "linux-libc-dev:amd64: /usr/include/..."
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                                 capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
    return f": {name.split(':')[0]} {version}" if version else ""
