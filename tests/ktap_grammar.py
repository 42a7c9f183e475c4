"""A strict reader of KTAP version 1 (the kernel's
Documentation/dev-tools/ktap.rst), for the tests of the conformance runner.

Written for this project rather than vendored: it rejects what the
kernel's lenient kunit_parser.py only warns about (a wrong test number, a
plan not met, a lower-case directive, a '#' in a description, a parent
reported ok over a failed subtest), so a test that parses the runner's
output with it fails on any of them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

VERSION = "KTAP version 1"
PLAN = re.compile(r"1\.\.(\d+)")
RESULT = re.compile(r"(ok|not ok) (\d+)(?: ([^#]*?))?(?: # (.*))?")
DIRECTIVES = ("SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR")
WITH_OK = {"SKIP": True, "XFAIL": True, "TIMEOUT": False, "ERROR": False}


class KtapError(ValueError):
    def __init__(self, lineno: int, line: str, message: str) -> None:
        super().__init__(f"line {lineno}: {message}: {line!r}")


@dataclass
class Test:
    number: int
    ok: bool
    description: str
    directive: str | None          # SKIP, XFAIL, TIMEOUT, ERROR, TODO or None
    reason: str
    subtests: list[Test] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)  # the '# ' lines just before the result

    @property
    def kind(self) -> str:
        """pass, fail, skip, xfail, timeout or error, for a leaf."""
        if self.directive in ("SKIP", "XFAIL", "TIMEOUT", "ERROR"):
            return self.directive.lower()
        return "pass" if self.ok else "fail"


@dataclass
class Document:
    plan: int
    tests: list[Test]
    diagnostics: list[str]  # every top-level '# ' line

    def leaves(self) -> list[tuple[str, Test]]:
        """(parent description, test) for every test without subtests."""
        out = []
        for t in self.tests:
            out += [(t.description, s) for s in t.subtests] if t.subtests else [("", t)]
        return out

    def counts(self) -> Counter[str]:
        return Counter(t.kind for _, t in self.leaves())


class _Reader:
    def __init__(self, text: str) -> None:
        if not text.endswith("\n"):
            raise KtapError(0, text[-40:], "the output does not end with a newline")
        self.lines = text[:-1].split("\n")
        self.i = 0

    def fail(self, message: str) -> KtapError:
        n = min(self.i, len(self.lines) - 1)
        return KtapError(n + 1, self.lines[n] if self.lines else "", message)

    def peek(self, depth: int) -> str | None:
        """The next line with its indentation removed; None at the end or at a shallower line."""
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i]
        if line != line.rstrip() or "\t" in line:
            raise self.fail("trailing white space or a tab")
        indent = len(line) - len(line.lstrip(" "))
        if indent % 2:
            raise self.fail("indentation is not a multiple of two spaces")
        if indent < 2 * depth:
            return None
        return line[2 * depth:]

    def block(self, depth: int) -> tuple[int, list[Test], list[str]]:
        """A version line, its plan, then exactly that many numbered results."""
        if self.peek(depth) != VERSION:
            raise self.fail(f"expected {VERSION!r} at depth {depth}")
        self.i += 1
        diagnostics: list[str] = []
        m = PLAN.fullmatch(self.peek(depth) or "")
        if not m:
            raise self.fail("expected a plan 1..N right after the version line")
        planned = int(m.group(1))
        self.i += 1
        tests: list[Test] = []
        pending: list[str] = []
        subtests: list[Test] = []
        while len(tests) < planned:
            line = self.peek(depth)
            if line is None:
                raise self.fail(f"the plan promises {planned} results, found {len(tests)}")
            if line.startswith("# "):
                pending.append(line[2:])
                diagnostics.append(line[2:])
                self.i += 1
                continue
            if line == "":
                raise self.fail("an empty line")
            if line.startswith(" "):
                if subtests:
                    raise self.fail("two subtest blocks before one result")
                _, subtests, _ = self.block(depth + 1)
                continue
            tests.append(self.result(line, len(tests) + 1, subtests, pending))
            pending, subtests = [], []
        return planned, tests, diagnostics

    def result(self, line: str, number: int, subtests: list[Test], diagnostics: list[str]) -> Test:
        m = RESULT.fullmatch(line)
        if not m:
            raise self.fail("not a result line")
        if int(m.group(2)) != number:
            raise self.fail(f"test number {m.group(2)}, expected {number}")
        ok, desc, rest = m.group(1) == "ok", m.group(3) or "", m.group(4)
        directive, reason = None, rest or ""
        if rest is not None:
            word = rest.split(" ", 1)[0]
            if word.upper() in DIRECTIVES and word != word.upper():
                raise self.fail(f"directive {word!r} is not upper case")
            if word in DIRECTIVES:
                directive, reason = word, rest[len(word):].strip()
                if directive in WITH_OK and WITH_OK[directive] != ok:
                    raise self.fail(f"{directive} on a {'passing' if ok else 'failing'} line")
                if directive == "SKIP" and not reason:
                    raise self.fail("a SKIP without a reason")
        test = Test(number, ok, desc, directive, reason, subtests, diagnostics)
        failed = [s for s in subtests if not s.ok]
        if failed and ok:
            raise self.fail(f"reported ok over {len(failed)} failed subtests")
        if subtests and not failed and not ok:
            raise self.fail("reported not ok although every subtest is ok")
        self.i += 1
        return test


def parse(text: str) -> Document:
    """Parse a whole KTAP document; raise KtapError at the first violation."""
    reader = _Reader(text)
    plan, tests, diagnostics = reader.block(0)
    while (line := reader.peek(0)) is not None:
        if not line.startswith("# "):
            raise reader.fail("only diagnostics may follow the last result")
        diagnostics.append(line[2:])
        reader.i += 1
    return Document(plan, tests, diagnostics)
