"""The spec's prose, parsed once so that every renderer walks the same tree.

The markup is deliberately tiny, because it has to mean the same thing in
roff and in reStructuredText: ``**NAME**`` (a constant or errno, bold),
``*name*`` (a field or argument, italic), and ``:man:`page(N)``` (a reference
to a manual page); ``\\-`` is a minus sign.  Text is kept one sentence per line, as man-pages wants
it, so a renderer can emit lines as they stand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bold:
    text: str


@dataclass(frozen=True)
class Italic:
    text: str


@dataclass(frozen=True)
class ManRef:
    page: str
    section: str


Span = Text | Bold | Italic | ManRef
Line = tuple[Span, ...]


@dataclass(frozen=True)
class Paragraph:
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Prose:
    """A doc string: paragraphs of lines of spans."""

    source: str
    paragraphs: tuple[Paragraph, ...]

    def plain(self) -> str:
        """The text without markup, one line per sentence."""
        return "\n\n".join(
            "\n".join(plain_line(line) for line in p.lines) for p in self.paragraphs
        )


class ProseError(ValueError):
    """A markup error; `line` counts from 0 within the doc string."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


_TOKEN = re.compile(
    r"\*\*(?P<bold>[^*\s][^*]*?\*?)\*\*(?!\*)"
    r"|(?<![\w*])\*(?P<italic>[^*\s][^*]*?)\*(?![\w*])"
    r"|:man:`(?P<page>[A-Za-z_][A-Za-z0-9_.+-]*)\((?P<section>[1-9][a-z]*)\)`"
)
# A sentence ends mid-line: ". X" after a lower-case letter or a closing mark.
_TWO_SENTENCES = re.compile(r"[a-z0-9)*`]\.\s+[A-Z]")


def plain_line(line: Line) -> str:
    out = []
    for span in line:
        if isinstance(span, ManRef):
            out.append(f"{span.page}({span.section})")
        else:
            out.append(span.text)
    return "".join(out)


def parse_line(text: str, lineno: int) -> Line:
    spans: list[Span] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            spans.append(Text(text[pos : m.start()]))
        if m.group("bold") is not None:
            spans.append(Bold(m.group("bold")))
        elif m.group("italic") is not None:
            spans.append(Italic(m.group("italic")))
        else:
            spans.append(ManRef(m.group("page"), m.group("section")))
        pos = m.end()
    if pos < len(text):
        spans.append(Text(text[pos:]))
    for span in spans:
        if isinstance(span, Text):
            if "*" in span.text:
                raise ProseError(lineno, f"unbalanced '*' markup in {text!r}")
            if ":man:" in span.text:
                raise ProseError(lineno, f"malformed :man: reference in {text!r}")
    return tuple(spans)


def parse(source: str) -> Prose:
    """Parse a doc string, refusing what no renderer could render faithfully."""
    paragraphs: list[Paragraph] = []
    current: list[Line] = []
    for lineno, raw in enumerate(source.rstrip("\n").split("\n")):
        text = raw.strip()
        if not text:
            if current:
                paragraphs.append(Paragraph(tuple(current)))
                current = []
            continue
        if raw != raw.rstrip():
            raise ProseError(lineno, "trailing white space")
        if re.search(r"\\(?!-)", text):
            raise ProseError(lineno, "a backslash other than \\- (the minus sign)")
        if _TWO_SENTENCES.search(text):
            raise ProseError(lineno, "two sentences on one line (one sentence per line)")
        current.append(parse_line(text, lineno))
    if current:
        paragraphs.append(Paragraph(tuple(current)))
    if not paragraphs:
        raise ProseError(0, "empty doc")
    return Prose(source, tuple(paragraphs))
