"""The man-page lint catches each defect man-pages rejects, at the line
where it is, and nothing on a page that follows the rules."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from tools import manlint

CLEAN = """\
.\\" SPDX-License-Identifier: Linux-man-pages-copyleft
.TH CLEAN 2const (date) "Linux man-pages (unreleased)"
.SH NAME
clean \\- a page that follows the rules
.SH DESCRIPTION
A sentence on its own line.
Another one, with
.BR fork (2).
.P
.in +4n
.EX
    indented code is fine in an example;
.EE
.in
.TP
.B EINVAL
A tagged paragraph.
.SH SEE ALSO
.BR ioctl (2)
"""


def lint(text: str) -> list[tuple[int, str]]:
    return [(f.line, f.check) for f in manlint.lint(text, "page")]


def replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_clean_page_has_no_findings() -> None:
    assert manlint.lint(CLEAN) == []


@pytest.mark.parametrize(("old", "new", "check"), [
    ("A sentence on its own line.\n", "A sentence on its own line.\n\n", "blank-line"),
    ("A sentence on its own line.", "A sentence on its own line. ", "trailing-space"),
    ("A sentence on its own line.", "A sentence ends. Another starts here.", "semantic-newline"),
    ("A sentence on its own line.", " A sentence with a leading blank.", "leading-space"),
    ("A sentence on its own line.", "A sentence " + "that goes on " * 7 + "past the width.", "long-line"),
])
def test_source_rules(old: str, new: str, check: str) -> None:
    page = replace(CLEAN, old, new)
    at = line_of(page, new.strip() or "A sentence on its own line.")
    if check == "blank-line":
        at += 1
    assert (at, check) in lint(page)


def test_source_rules_spare_what_man_pages_allows() -> None:
    long_macro = '.BR "#include <linux/userfaultfd.h>" "  /* Definition of the " UFFD* " constants */"'
    page = replace(CLEAN, ".BR fork (2).", ".BR fork (2).\n" + long_macro)
    assert len(long_macro) > manlint.WIDTH
    assert lint(page) == []  # a macro line cannot always be broken; code may be indented


def test_mandoc_findings_are_reported_at_their_line() -> None:
    page = replace(CLEAN, ".SH DESCRIPTION\n", ".SH DESCRIPTION\n.P\n")
    assert (line_of(page, ".SH DESCRIPTION") + 1, "mandoc") in lint(page)


def test_mandoc_styles_upstream_ignores_are_ignored() -> None:
    page = replace(CLEAN, ".TH CLEAN", ".TH clean")  # lower case in the title
    assert lint(page) == []


def test_groff_warnings_are_findings() -> None:
    page = replace(CLEAN, "Another one, with", "Another one \\*[nosuchstring] with")
    assert (line_of(page, "nosuchstring"), "groff") in lint(page)


def test_rendered_width() -> None:
    page = replace(CLEAN, "    indented code", "    " + "x" * 90 + " code")
    assert (0, "width") in lint(page)


def test_fragment_is_linted_inside_a_page_at_its_own_lines() -> None:
    fragment = ".SS UFFDIO_MOVE\nA sentence.\nText \\*[nosuchstring] here.\n.P\n.P\nEnd.\n"
    findings = lint(fragment)
    assert (3, "groff") in findings
    assert any(check == "mandoc" and line in (4, 5) for line, check in findings)
    assert manlint.lint(".SS UFFDIO_MOVE\nA sentence.\n") == []


def test_cli(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.2", tmp_path / "bad.2.gz"
    good.write_text(CLEAN)
    bad.write_bytes(gzip.compress(replace(CLEAN, "A sentence on its own line.", "One. Two.").encode()))

    def run(*pages: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tools.manlint", *map(str, pages)],
                              capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parents[1])

    assert (run(good).returncode, run(good).stdout) == (0, "")
    result = run(good, bad)
    assert result.returncode == 1
    assert result.stdout == f"{bad}:{line_of(CLEAN, 'A sentence on its own line.')}: semantic-newline: " \
                            "a sentence ends mid-line: start it on a new line\n"
    assert run(tmp_path / "missing.2").returncode == 2
