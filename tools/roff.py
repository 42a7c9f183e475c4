"""The spec as roff, in the Linux man-pages project's house style.

A walk over the model with one method per kind of thing (a span, a line of
prose, a field, a flag, an error, a step of the order of checks, a page).
Every name, number and sentence comes from the model; the renderer adds only
the frame a man page needs (macros, section titles, "Linux.").

Two outputs: the ``UFFDIO_MOVE(2const)`` page of the current layout, and the
``.SS UFFDIO_MOVE`` subsection of the older monolithic
``ioctl_userfaultfd(2)`` page, the form the seed text was written for.

Prose becomes roff the way man-pages writes it by hand: bold and italic
words go on macro lines (``.B``, ``.I``, ``.BR``, ...) with the punctuation
that touches them as the alternate argument (``.BR EINVAL .``), struct
members carry a leading dot (``.I .move``), page references are
``.BR fork (2)``, and long sentences are broken at clause boundaries.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import singledispatchmethod

from spec.model import (
    Behaviour,
    Bug,
    Error,
    Feature,
    Field,
    Flag,
    FlagSet,
    HistoryEntry,
    Note,
    PageRef,
    RangeIoctl,
    Spec,
    Step,
    Struct,
    Version,
)
from spec.prose import Bold, Italic, Line, ManRef, Prose, Span, Text

# Source lines are kept to this many bytes where a break is possible.
WIDTH = 80

R, B, I = "R", "B", "I"  # noqa: E741  (roff's own font names)

Piece = tuple[str, str]  # (font, text)

_CLAUSE_END = re.compile(r"[,;:] ")
_UPPER_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def page_date(spec: Spec, environ: Mapping[str, str] = os.environ) -> str:
    """The .TH date: the spec's, unless SOURCE_DATE_EPOCH asks for a
    reproducible build date (https://reproducible-builds.org/specs/source-date-epoch/)."""
    epoch = environ.get("SOURCE_DATE_EPOCH")
    if epoch is None or epoch == "":
        return spec.date
    if not epoch.isdigit():
        raise ValueError(f"SOURCE_DATE_EPOCH is not a number of seconds: {epoch!r}")
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).date().isoformat()


def monolithic_page(spec: Spec) -> PageRef:
    """The page that held every userfaultfd ioctl before man-pages 6.9: the
    ioctl_* page among the spec's SEE ALSO references."""
    for ref in spec.see_also:
        if ref.page.startswith("ioctl_"):
            return ref
    raise LookupError("the spec's see-also names no ioctl_* page to hold the subsection")


def quote(arg: str) -> str:
    """A macro argument: quoted when it holds blanks, with quotes escaped."""
    arg = arg.replace('"', r"\(dq")
    if arg == "" or re.search(r"\s", arg):
        return f'"{arg}"'
    return arg


def text_line(text: str) -> str:
    """A text line that troff cannot mistake for a request."""
    text = text.strip()
    return "\\&" + text if text[:1] in (".", "'") else text


def escape(text: str) -> str:
    """Plain strings of the model (not Prose): backslashes are literal."""
    return text.replace("\\", r"\e")


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """Break a text line that is too long, at a clause boundary if there is
    one within reach, else between words (semantic newlines)."""
    out: list[str] = []
    while len(line.encode()) > width:
        head = line[: width + 1]
        cut = [m.end() for m in _CLAUSE_END.finditer(head) if m.end() - 1 <= width]
        if cut and cut[-1] > width // 4:
            at = cut[-1]
        else:
            at = head.rfind(" ")
            if at <= 0:
                break  # one word longer than the line: nothing to do
        out.append(text_line(line[:at]))
        line = line[at:].strip()
    out.append(text_line(line))
    return out


def section_key(ref: PageRef) -> tuple[int, str, str]:
    """man-pages orders SEE ALSO by section (2 before 2const before 3), then name."""
    m = re.match(r"(\d+)(.*)", ref.section)
    num, rest = (int(m.group(1)), m.group(2)) if m else (99, ref.section)
    return num, rest, ref.page


class Roff:
    """Renders one spec; `date` goes into .TH."""

    def __init__(self, spec: Spec, date: str) -> None:
        self.spec = spec
        self.date = date
        # Struct members get a leading dot in running text (man-pages 6.10+).
        self.members = {f.name for f in spec.struct.fields}
        self.members |= {spec.feature.field, spec.range_ioctl.field}

    # --- spans -> (font, text) pieces -----------------------------------------
    @singledispatchmethod
    def span(self, span: Span) -> list[Piece]:
        raise TypeError(f"no roff for {span!r}")

    @span.register
    def _(self, span: Text) -> list[Piece]:
        return [(R, span.text)]

    @span.register
    def _(self, span: Bold) -> list[Piece]:
        return [(B, span.text)]

    @span.register
    def _(self, span: Italic) -> list[Piece]:
        return [(I, "." + span.text if span.text in self.members else span.text)]

    @span.register
    def _(self, span: ManRef) -> list[Piece]:
        return [(B, span.page), (R, f"({span.section})")]

    # --- a line of prose -> roff lines ----------------------------------------
    def line(self, line: Line) -> list[str]:
        """One sentence: roman words on text lines, every marked-up word
        (with the punctuation touching it) on a macro line."""
        clusters: list[list[Piece]] = [[]]
        for span in line:
            for font, text in self.span(span):
                if font != R:
                    clusters[-1].append((font, text))
                    continue
                for part in re.split(r"(\s+)", text):
                    if part.isspace():
                        clusters.append([])
                    elif part:
                        clusters[-1].append((R, part))
        out: list[str] = []
        words: list[str] = []
        for cluster in filter(None, clusters):
            if all(font == R for font, _ in cluster):
                words.append("".join(text for _, text in cluster))
                continue
            if words:
                out += wrap(" ".join(words))
                words = []
            out += self.macro(cluster)
        if words:
            out += wrap(" ".join(words))
        return out

    def macro(self, cluster: Sequence[Piece]) -> list[str]:
        """A run of pieces with no blank between them, as font-alternating
        macro lines; three fonts in one run need two macros joined by \\c."""
        merged: list[Piece] = []
        for font, text in cluster:
            if merged and merged[-1][0] == font:
                merged[-1] = (font, merged[-1][1] + text)
            else:
                merged.append((font, text))
        runs: list[list[Piece]] = [[]]
        for piece in merged:
            fonts = {f for f, _ in runs[-1]} | {piece[0]}
            if len(fonts) > 2:
                runs.append([])
            runs[-1].append(piece)
        out = []
        for n, run in enumerate(runs):
            args = [quote(text) for _, text in run]
            if n < len(runs) - 1:
                last = run[-1][1] + "\\c"
                args[-1] = quote(last)
            name = run[0][0] + (run[1][0] if len(run) > 1 else "")
            out.append(f".{name} {' '.join(args)}")
        return out

    def prose(self, prose: Prose, para: str = ".P") -> list[str]:
        """Paragraphs separated by `para` (.IP inside a .TP entry)."""
        out: list[str] = []
        for n, paragraph in enumerate(prose.paragraphs):
            if n:
                out.append(para)
            for line in paragraph.lines:
                out += self.line(line)
        return out

    def words(self, text: str) -> Line:
        """A plain string of the model (a summary) as spans: member names in
        italics, C constants in bold, as the prose would mark them."""
        spans: list[Span] = []
        for n, word in enumerate(text.split()):
            if n:
                spans.append(Text(" "))
            if word in self.members:
                spans.append(Italic(word))
            elif _UPPER_NAME.fullmatch(word):
                spans.append(Bold(word))
            else:
                spans.append(Text(escape(word)))
        return tuple(spans)

    # --- frame ------------------------------------------------------------------
    def tagged(self, tag: Iterable[str], body: Iterable[str]) -> list[str]:
        return [".TP", *tag, *body]

    def name_tag(self, name: str, since: Version | None) -> list[str]:
        """A list tag; a name added after the interface carries its version."""
        if since is None or not self.spec.since < since:
            return [f".B {quote(name)}"]
        return [f".BR {quote(name)} {quote(f' (since Linux {since})')}"]

    # --- the model --------------------------------------------------------------
    def declaration(self, struct: Struct, bold: bool) -> list[str]:
        """The struct as C, comments aligned; bold for a SYNOPSIS."""
        types = max(len(f.ctype.base) for f in struct.fields)
        names = max(len(self.member_decl(f)) for f in struct.fields)
        out = [f".B struct {struct.name} {{" if bold else f"struct {struct.name} {{"]
        for f in struct.fields:
            decl = f"    {f.ctype.base:<{types}}  {self.member_decl(f)}"
            comment = f"{' ' * (names - len(self.member_decl(f)) + 2)}/* {f.comment} */"
            if bold:
                out.append(f".BR {quote(decl)} {quote(comment)}" if f.comment else f".B {quote(decl)}")
            else:
                out.append(decl + comment if f.comment else decl)
        out.append(".B };" if bold else "};")
        return out

    @staticmethod
    def member_decl(f: Field) -> str:
        return f"{f.name}[{f.ctype.count}];" if f.ctype.count > 1 else f"{f.name};"

    def field(self, f: Field) -> list[str]:
        body = self.prose(f.doc, ".IP")
        if f.flags is not None:
            body += [".IP", *self.flagset(self.spec.flagset(f.flags), nested=True)]
        return self.tagged([f".I {quote('.' + f.name)}"], body)

    def fields(self, struct: Struct) -> list[str]:
        out = [".P", *self.prose(struct.doc)]
        for f in struct.fields:
            out += self.field(f)
        nested = {f.flags for f in struct.fields}
        for fs in self.spec.flags:
            if fs.name not in nested:
                out += [".P", *self.flagset(fs)]
        return out

    def flagset(self, fs: FlagSet, nested: bool = False) -> list[str]:
        out = self.prose(fs.doc, ".IP" if nested else ".P")
        if nested:
            out.append(".RS")
        for flag in fs.values:
            out += self.flag(flag)
        if nested:
            out.append(".RE")
        return out

    def flag(self, flag: Flag) -> list[str]:
        return self.tagged(self.name_tag(flag.name, flag.since), self.prose(flag.doc, ".IP"))

    def feature(self, feature: Feature) -> list[str]:
        return [".P", *self.prose(feature.doc)]

    def range_ioctl(self, ri: RangeIoctl) -> list[str]:
        return [".P", *self.prose(ri.doc)]

    def error(self, error: Error) -> list[str]:
        return self.tagged(self.name_tag(error.errno, error.since), self.prose(error.doc, ".IP"))

    def errors(self) -> list[str]:
        out: list[str] = []
        for error in self.spec.errors:
            out += self.error(error)
        return out

    def step(self, n: int, step: Step) -> list[str]:
        """One check of the order of checks: what fails, and its errno on
        the kernels the spec describes last (what it returns, where the
        documented errno is unreachable)."""
        b = self.spec.behaviour(step.behaviour)
        latest = max(b.expect, key=lambda e: e.kernels.since or Version(0, 0))
        spans = self.words(b.summary)
        if errno := latest.instead or latest.errno:
            spans += (Text(" ("), Bold(errno), Text(")"))
        return [f".IP {n}. 4", *self.line(spans)]

    def precedence(self) -> list[str]:
        out = [".P", *self.prose(self.spec.precedence_doc), ".PD 0"]
        for n, step in enumerate(self.spec.precedence, 1):
            out += self.step(n, step)
        return out + [".PD"]

    def behaviour(self, b: Behaviour) -> list[str]:
        return [".P", *self.prose(b.doc)]

    def unlisted(self) -> list[Behaviour]:
        """The behaviours no entry of the page stands for: what a success
        does, the zero page, huge pages, swap, overlap."""
        cited = self.spec.cited()
        return [b for b in self.spec.behaviours if b.id not in cited]

    def note(self, note: Note) -> list[str]:
        return [".P", *self.prose(note.doc)]

    def bug(self, bug: Bug) -> list[str]:
        return [".P", *self.prose(bug.doc)]

    def history_entry(self, h: HistoryEntry) -> list[str]:
        return self.tagged([f"Linux {h.version}"], self.prose(h.doc, ".IP"))

    def history(self) -> list[str]:
        """"Linux 6.8." as man-pages has it, what came with it, then each
        later change under its version."""
        out = [f"Linux {self.spec.since}."]
        for h in self.spec.history:
            if h.version == self.spec.since:
                out += [".P", *self.prose(h.doc)]
            else:
                out += self.history_entry(h)
        return out

    def see_also(self) -> list[str]:
        refs = sorted(self.spec.see_also, key=section_key)
        out = [f".BR {quote(r.page)} ({r.section})," for r in refs]
        out[-1] = out[-1].rstrip(",")
        path = self.spec.see_also_path.replace("-", r"\-").replace("/", r"/\:")
        return [*out, ".P", f".I {path}"]

    def notes(self) -> list[str]:
        out: list[str] = []
        for note in self.spec.notes:
            out += self.note(note)
        out += self.precedence()
        for b in self.unlisted():
            out += self.behaviour(b)
        return _drop_leading_paragraph(out)

    def bugs(self) -> list[str]:
        out: list[str] = []
        for bug in self.spec.bugs:
            out += self.bug(bug)
        return _drop_leading_paragraph(out)

    # --- pages ------------------------------------------------------------------
    def page(self) -> str:
        """UFFDIO_MOVE(2const), the layout of man-pages 6.9 and later."""
        spec, ioctl = self.spec, self.spec.ioctl
        out = [
            r'.\" Copyright, the authors of the Linux man-pages project',
            r'.\"',
            r'.\" SPDX-License-Identifier: Linux-man-pages-copyleft',
            r'.\"',
            f'.TH {ioctl.name} 2const {self.date} "Linux man-pages (unreleased)"',
            ".SH NAME", ioctl.name, r"\-", text_line(escape(ioctl.summary or "")),
            ".SH LIBRARY", "Standard C library", r".RI ( libc ,\~ \-lc )",
            ".SH SYNOPSIS", *self.synopsis(),
            ".SH DESCRIPTION", *self.prose(ioctl.doc), *self.fields(spec.struct),
            *self.feature(spec.feature), *self.range_ioctl(spec.range_ioctl),
            ".SH RETURN VALUE", *self.prose(spec.return_value),
            ".SH ERRORS", *self.errors(),
            ".SH STANDARDS", "Linux.",
            ".SH HISTORY", *self.history(),
        ]
        if notes := self.notes():
            out += [".SH NOTES", *notes]
        if bugs := self.bugs():
            out += [".SH BUGS", *bugs]
        out += [".SH SEE ALSO", *self.see_also()]
        return "\n".join(out) + "\n"

    def synopsis(self) -> list[str]:
        spec, ioctl = self.spec, self.spec.ioctl
        # "UFFD*": what the names this page documents have in common.
        names = [ioctl.name, spec.feature.name, *(f.name for fs in spec.flags for f in fs.values)]
        prefix = os.path.commonprefix(names)
        arg = ioctl.arg.name if ioctl.arg else None
        proto = (f'.BI "int ioctl(int " fd ", {ioctl.name}, struct {arg} *" argp );' if arg
                 else f'.BI "int ioctl(int " fd ", {ioctl.name});"')
        out = [
            ".nf",
            f'.BR "#include <{spec.header}>" "  /* Definition of " {prefix}* " constants */"',
            ".B #include <sys/ioctl.h>",
            ".P",
            proto,
        ]
        if ioctl.arg is None:
            return [*out, ".fi"]
        return [*out, ".P", f".B #include <{spec.header}>", ".P", ".fi", ".EX",
                *self.declaration(ioctl.arg, bold=True), ".EE"]

    def subsection(self) -> str:
        """The .SS of the monolithic ioctl_userfaultfd(2) page (man-pages
        before 6.9), in that page's own conventions."""
        spec, ioctl = self.spec, self.spec.ioctl
        out = [f".SS {ioctl.name}", f"(Since Linux {spec.since}.)", *self.prose(ioctl.doc)]
        if ioctl.arg is not None:
            out += [".P", ".in +4n", ".EX", *self.declaration(ioctl.arg, bold=False), ".EE", ".in"]
        out += self.fields(spec.struct)
        out += self.feature(spec.feature) + self.range_ioctl(spec.range_ioctl)
        out += [".P", *self.notes()]
        for bug in spec.bugs:
            out += self.bug(bug)
        out += [".P", *self.prose(spec.return_value), "Possible errors include:", *self.errors()]
        return "\n".join(out) + "\n"


def _drop_leading_paragraph(lines: list[str]) -> list[str]:
    """A section's first paragraph needs no .P (mandoc flags it)."""
    return lines[1:] if lines[:1] == [".P"] else lines
