"""KTAP version 1 output, as kernel CI systems and the kernel's own
kunit_parser.py read it: one nested block per check group, the behaviour
id as each result's description, directives in upper case.

Lines are written as the results come (a long run shows progress, and a
killed run leaves what it had) and kept, so the same text can be saved to
a file at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from .harness import Result
from .judge import Status, one_line
from .report import Totals

VERSION_LINE = "KTAP version 1"
INDENT = "  "
FAILED = (Status.FAIL, Status.TIMEOUT, Status.ERROR)


def description(text: str) -> str:
    """A KTAP description may not hold '#': it would start a directive."""
    return one_line(text).replace("#", "_")


def result_line(ok: bool, number: int, desc: str, directive: str = "") -> str:
    line = f"{'ok' if ok else 'not ok'} {number} {description(desc)}"
    return f"{line} # {one_line(directive)}" if directive else line


def directive(r: Result) -> str:
    if r.status in (Status.SKIP, Status.XFAIL, Status.TIMEOUT, Status.ERROR):
        return f"{r.status.value} {r.reason}".strip()
    return r.reason if r.status == Status.FAIL else ""


def explanation(r: Result) -> str:
    """The diagnostic line above a failing result: what the spec says, what the kernel did."""
    text = f"expected {r.expected}; observed {r.observed or 'nothing'}" if r.expected else r.reason
    if r.expected and r.status != Status.FAIL:
        text += f"; {r.status.value} {r.reason}"
    return f"{r.id}: {text}" + (f" (check {r.check})" if r.check else "")


class KtapWriter:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.number = 0      # the last top-level test number
        self.sub = 0         # the last number in the open group

    def emit(self, line: str, depth: int = 0) -> None:
        line = INDENT * depth + line
        self.lines.append(line)
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()  # before any fork, and for whoever follows the run live

    def diagnostic(self, text: str, depth: int = 0) -> None:
        self.emit(f"# {one_line(text)}", depth)

    def header(self, groups: int, diagnostics: Iterable[str]) -> None:
        self.emit(VERSION_LINE)
        self.emit(f"1..{groups}")
        for d in diagnostics:
            self.diagnostic(d)

    # harness.Listener
    def begin_group(self, name: str, count: int) -> None:
        self.emit(VERSION_LINE, 1)
        self.emit(f"1..{count}", 1)
        self.sub = 0

    def result(self, r: Result) -> None:
        self.sub += 1
        for part in r.parts or (r,):
            if r.status in FAILED and part.status in FAILED:
                self.diagnostic(explanation(part), 1)
        self.emit(result_line(r.status not in FAILED, self.sub, r.id, directive(r)), 1)

    def end_group(self, name: str, results: Sequence[Result]) -> None:
        self.number += 1
        failed = sum(r.status in FAILED for r in results)
        if failed:
            self.diagnostic(f"{name}: {failed} of {len(results)} failed")
            self.emit(result_line(False, self.number, name))
        elif all(r.status == Status.SKIP for r in results):
            self.emit(result_line(True, self.number, name, "SKIP every behaviour skipped"))
        else:
            self.emit(result_line(True, self.number, name))

    def totals(self, totals: Totals) -> None:
        self.diagnostic(f"Totals: {totals}")

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)
