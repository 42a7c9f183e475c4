"""The lint the Linux man-pages project runs on a page, standalone.

``mandoc -Tlint`` (less the styles upstream ignores), ``groff -man -ww -z``,
the page as man(1) shows it at 80 columns, and the source rules of
man-pages(7): no blank line, no trailing blank, one sentence per line, no
text line that starts with a blank, text lines under 80 bytes.  A fragment
(a ``.SS`` without ``.TH``) is linted inside a minimal page, and its
findings are reported at the fragment's own line numbers.

    python -m tools.manlint PAGE...      # prints findings, exit 1 if any
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What the man-pages project itself ignores in mandoc's output.
MANDOC_IGNORED = (
    "STYLE: lower case character in document title",
    "STYLE: referenced manual not found",
    "WARNING: cross reference to self",
)
WIDTH = 80  # rendered columns, and source bytes of a text line
PLACEHOLDER_DATE = "2000-01-01"  # fills a .TH "(date)" as the man-pages build does
WRAPPER = (
    '.TH FRAGMENT 2 {date} "Linux man-pages (unreleased)"',
    ".SH NAME",
    r"fragment \- a subsection linted on its own",
    ".SH DESCRIPTION",
)

_TWO_SENTENCES = re.compile(r"^(?!\.)[^.]*[a-z]\. [A-Z]")


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int  # 0: the page as a whole (its rendering)
    check: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.check}: {self.message}"


def read_page(path: Path) -> str:
    """A page's source; Debian ships them gzipped."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def is_fragment(text: str) -> bool:
    return not any(line.startswith(".TH") for line in text.splitlines())


def lint_file(path: str | Path) -> list[Finding]:
    path = Path(path)
    return lint(read_page(path), str(path))


def lint(text: str, name: str = "<page>") -> list[Finding]:
    """Every finding of every check, sorted by line."""
    offset = 0
    page = text.replace("(date)", PLACEHOLDER_DATE)
    if is_fragment(text):
        wrapper = [w.format(date=PLACEHOLDER_DATE) for w in WRAPPER]
        offset = len(wrapper)
        page = "\n".join(wrapper) + "\n" + page
    findings = source_findings(text, name)
    with tempfile.TemporaryDirectory(prefix="manlint.") as tmp:
        file = Path(tmp) / "page.2"
        file.write_text(page, encoding="utf-8")
        for check, found in (("mandoc", mandoc(file)), ("groff", groff(file))):
            for line, message in found:
                findings.append(Finding(name, max(line - offset, 0), check, message))
        findings += [Finding(name, 0, "width", m) for m in rendered(file)]
    return sorted(set(findings))


def source_findings(text: str, name: str) -> list[Finding]:
    """The rules a reviewer checks by eye in the source."""
    out: list[Finding] = []
    nofill = False
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        def add(check: str, message: str, n: int = n) -> None:
            out.append(Finding(name, n, check, message))

        if line == "":
            add("blank-line", "blank line (use .P)")
            continue
        if line != line.rstrip():
            add("trailing-space", "trailing white space")
        request = line[:1] in (".", "'")
        if request:
            word = line.split()[0]
            nofill = {".EX": True, ".nf": True, ".EE": False, ".fi": False}.get(word, nofill)
            continue
        if line[:1].isspace() and not nofill:
            add("leading-space", "text line starts with a blank (a break in filled text)")
        if _TWO_SENTENCES.match(line):
            add("semantic-newline", "a sentence ends mid-line: start it on a new line")
        if len(line.encode()) > WIDTH and " " in line.strip():
            add("long-line", f"text line of {len(line.encode())} bytes: break it at a clause")
    return out


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, env={**base, **(env or {})}, check=False)


def _located(output: str, file: Path) -> list[tuple[int, str]]:
    """(line, message) from "tool: FILE:LINE[:COL]: message" lines."""
    at = re.compile(re.escape(str(file)) + r":(\d+):(?:\d+:)?\s*(.*)")
    out = []
    for raw in output.splitlines():
        m = at.search(raw)
        out.append((int(m.group(1)), m.group(2)) if m else (0, raw.replace(str(file), "PAGE")))
    return out


def mandoc(file: Path) -> list[tuple[int, str]]:
    result = _run(["mandoc", "-Tlint", str(file)])
    found = _located(result.stdout + result.stderr, file)
    return [(n, m) for n, m in found if m and not m.startswith(MANDOC_IGNORED)]


def groff(file: Path) -> list[tuple[int, str]]:
    result = _run(["groff", "-man", "-ww", "-z", str(file)])
    found = _located(result.stdout + result.stderr, file)
    if result.returncode and not found:
        found = [(0, f"groff exited with status {result.returncode}")]
    return found


def render(file: Path, width: int = WIDTH) -> str:
    """The page as `man` shows it, without formatting (man -l | col -bx)."""
    env = {"MANWIDTH": str(width), "MANPAGER": "cat", "PAGER": "cat", "MAN_KEEP_FORMATTING": ""}
    shown = _run(["man", "-l", str(file)], env)
    if shown.returncode:
        raise RuntimeError(f"man -l {file} failed: {shown.stderr.strip()}")
    plain = subprocess.run(["col", "-bx"], input=shown.stdout, capture_output=True, text=True, check=True)
    return plain.stdout


def rendered(file: Path) -> list[str]:
    return [f"rendered line of {len(line)} columns: {line.strip()[:60]!r}"
            for line in render(file).splitlines() if len(line) > WIDTH]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.manlint", description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", metavar="PAGE", help="a page, a .gz page, or a .SS fragment")
    args = parser.parse_args(argv)
    status = 0
    for page in args.pages:
        try:
            findings = lint_file(page)
        except OSError as exc:
            print(f"{page}: {exc.strerror}", file=sys.stderr)
            status = 2
            continue
        for finding in findings:
            print(finding)
        if findings and not status:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
