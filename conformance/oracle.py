"""The spec as an oracle: the kernel's answer to any UFFDIO_MOVE call on a
layout, predicted from the spec alone.

The rules are the spec's: its precedence lists the checks in the kernel's
order, each with the behaviour whose expectation (for the running kernel)
gives the errno and the value left in `move`.  This module knows only what
each condition *means* (one predicate per condition name, in CONDITIONS)
and how memory changes when a page moves.  It walks the spec's steps in
order: the first that holds decides.  Reorder the steps, change an errno,
give a behaviour a new kernel range, and the prediction follows; a step
whose condition has no predicate here is an error, not a silent pass.

The result steps apply to every outcome that writes `move` (a success, a
failure of the mappings or of a page, and whatever else the spec's
expectations say is written): they say what happens when the kernel
cannot write it, or when pages moved before a failure.  Where the spec
leaves `move` unstated, both outcomes are allowed.

The page steps are made for each page in address order, on a simulation of
the page tables (which spans have a page table, which a huge page) and of
every page's contents, so overlapping ranges and partial moves come out as
the walk leaves them.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Callable
from dataclasses import dataclass, replace

from spec.model import Expectation, Spec, Step, Version

from .layout import (
    ANON,
    ARG_MOVE_UNWRITABLE,
    ARG_UNREADABLE,
    COW,
    HOLE,
    MARKERS,
    OTHER,
    OTHER_PROCESS,
    SHARED,
    SWAPPED,
    THIS,
    THP,
    THP_COW,
    ZERO,
    Arena,
    Call,
    Geometry,
    Layout,
    Span,
    spans,
)

WRITTEN = ("len", "-errno", "moved-bytes")  # the spec's words for a `move` the kernel writes
NO_TABLE, TABLE, HUGE = "none", "table", "huge"


class OracleError(Exception):
    """The spec cannot be walked: a condition the oracle does not know, or
    no behaviour for the running kernel where one is needed."""


@dataclass(frozen=True)
class Machine:
    version: Version
    geometry: Geometry


@dataclass(frozen=True)
class Decision:
    step: Step | None        # None: no check stopped the call
    behaviour: str
    expectation: Expectation

    def describe(self) -> str:
        where = f"{self.step.stage}/{self.step.condition}" if self.step else "success"
        return f"{where} -> {self.behaviour} ({self.expectation.describe()})"


@dataclass(frozen=True)
class Prediction:
    errno: str | None        # None: the call returns 0
    move: int | None         # the value left in `move`; None: untouched
    move_stated: bool        # False where the spec says nothing of `move`
    pages: tuple[str, ...]   # every layout page afterwards, in Layout.labels() order
    moved: int               # bytes the walk moved
    decision: Decision
    # Where the spec does not say whether `move` is written, a result step
    # may or may not apply: its outcome is then as good a prediction.
    alternatives: tuple[Decision, ...] = ()

    def allows(self, errno: str | None) -> bool:
        return errno == self.errno or any(d.expectation.errno == errno for d in self.alternatives)


# What a page holds, as the call sees it and as a reader sees it afterwards.
# `content` is what the fuzzer can observe: "hole", "zero", the label of the
# page whose contents it holds ("A3"), "swap:A3", or the marker ("poison").
def initial_content(label: str, state: str) -> str:
    if state == HOLE:
        return "hole"
    if state == ZERO:
        return "zero"
    if state == SWAPPED:
        return f"swap:{label}"
    if state in MARKERS:
        return state
    return label


class World:
    """The layout as the kernel holds it, changed as the walk moves pages."""

    def __init__(self, machine: Machine, layout: Layout, call: Call, arena: Arena, known_mode: int) -> None:
        geo = machine.geometry
        self.geo, self.layout, self.call, self.known_mode = geo, layout, call, known_mode
        self.dst = call.dst.resolve(layout, geo, arena) % (1 << 64)
        self.src = call.src.resolve(layout, geo, arena) % (1 << 64)
        self.len = call.length(geo) % (1 << 64)
        self.spans = spans(layout, geo, arena)
        self.state: dict[int, str] = {}
        self.content: dict[int, str] = {}
        self.tables: dict[int, str] = {}
        self.order: list[int] = []
        ps = geo.page_size
        for _v, start, pages, labels in zip(layout.vmas, layout.starts(geo), layout.initial(),
                                           _labels_by_vma(layout), strict=True):
            for k, (state, label) in enumerate(zip(pages, labels, strict=True)):
                addr = arena.base + (start + k) * ps
                self.order.append(addr)
                self.state[addr] = COW if state == THP_COW else state
                self.content[addr] = initial_content(label, state)
                span = addr // geo.pmd_size
                if state in (THP, THP_COW):
                    self.tables[span] = HUGE
                elif state != HOLE:
                    self.tables.setdefault(span, TABLE)
        self.moved = 0
        self.error: Decision | None = None

    # --- what the predicates ask -------------------------------------------------
    def span_at(self, addr: int) -> Span | None:
        for s in self.spans:
            if s.contains(addr):
                return s
        return None

    @property
    def dst_span(self) -> Span:
        span = self.span_at(self.dst)
        assert span is not None, "a vma step asked about a dst without a mapping"
        return span

    @property
    def src_span(self) -> Span:
        span = self.span_at(self.src)
        assert span is not None, "a vma step asked about a src without a mapping"
        return span

    def table(self, addr: int) -> str:
        return self.tables.get(addr // self.geo.pmd_size, NO_TABLE)

    def page(self, addr: int) -> str:
        return self.state.get(addr, HOLE)

    def beyond(self, start: int) -> bool:
        """The range [start, start + len) leaves the user address space."""
        return start >= self.geo.task_size or self.len > self.geo.task_size - start

    # --- the walk's effect ---------------------------------------------------------
    def move(self, at: Cursor) -> None:
        """Page `at.src` goes to `at.dst` (a hole stays a hole); the kernel
        splits a huge page it moves from and has page tables at both ends."""
        pmd = self.geo.pmd_size
        self.tables[at.src // pmd] = TABLE
        if self.tables.get(at.dst // pmd) != HUGE:
            self.tables[at.dst // pmd] = TABLE
        state, content = self.page(at.src), self.content.get(at.src, "hole")
        self.state[at.src], self.content[at.src] = HOLE, "hole"
        self.state[at.dst], self.content[at.dst] = state, content

    def pages(self) -> tuple[str, ...]:
        return tuple(self.content[a] for a in self.order)


@dataclass(frozen=True)
class Cursor:
    """The page the walk is at."""

    index: int
    dst: int
    src: int


def _labels_by_vma(layout: Layout) -> list[tuple[str, ...]]:
    return [tuple(f"{layout.label(i)}{k}" for k in range(len(v.pages))) for i, v in enumerate(layout.vmas)]


Predicate = Callable[[World, Cursor | None], bool]


def _known_mode(spec: Spec) -> int:
    return spec.flagset(spec.struct.field("mode").flags or "mode").mask


def _page(pred: Callable[[World, Cursor], bool]) -> Predicate:
    def at_page(w: World, at: Cursor | None) -> bool:
        if at is None:
            raise OracleError("a page condition is listed at a stage that has no page")
        return pred(w, at)
    return at_page


# One predicate per condition name of the spec's precedence: what the
# condition means, never what it returns.
CONDITIONS: dict[str, Predicate] = {
    # the call
    "before-api": lambda w, at: not w.layout.api,
    "mmap-changing": lambda w, at: w.layout.pending_event,
    "arg-unreadable": lambda w, at: w.call.arg == ARG_UNREADABLE,
    "cross-mm": lambda w, at: w.call.caller == OTHER_PROCESS,
    # the ranges
    "dst-unaligned": lambda w, at: w.dst % w.geo.page_size != 0,
    "src-unaligned": lambda w, at: w.src % w.geo.page_size != 0,
    "len-unaligned": lambda w, at: w.len % w.geo.page_size != 0,
    "len-zero": lambda w, at: w.len == 0,
    "dst-wraps": lambda w, at: w.beyond(w.dst),
    "src-wraps": lambda w, at: w.beyond(w.src),
    "mode-unknown": lambda w, at: bool(w.call.mode & ~w.known_mode),
    # the mappings
    "dst-no-vma": lambda w, at: w.span_at(w.dst) is None,
    "src-no-vma": lambda w, at: w.span_at(w.src) is None,
    "src-shared": lambda w, at: w.src_span.kind == SHARED,
    "src-past-vma": lambda w, at: w.src + w.len > w.src_span.end,
    "dst-shared": lambda w, at: w.dst_span.kind == SHARED,
    "dst-past-vma": lambda w, at: w.dst + w.len > w.dst_span.end,
    "prot-differs": lambda w, at: w.src_span.prot != w.dst_span.prot,
    "mlock-differs": lambda w, at: w.src_span.mlocked != w.dst_span.mlocked,
    "read-only": lambda w, at: "w" not in w.src_span.prot,
    "dst-unregistered": lambda w, at: w.dst_span.uffd not in (THIS, OTHER),
    "dst-other-uffd": lambda w, at: w.dst_span.uffd == OTHER,
    "not-anonymous": lambda w, at: w.src_span.kind != ANON or w.dst_span.kind != ANON,
    # each page (or the page table, or huge page, covering it)
    "dst-huge": _page(lambda w, at: w.table(at.dst) == HUGE),
    "src-huge-shared": _page(lambda w, at: w.table(at.src) == HUGE and w.page(at.src) == COW),
    "src-no-page-table": _page(lambda w, at: w.table(at.src) == NO_TABLE),
    "dst-present": _page(lambda w, at: w.page(at.dst) != HOLE),
    "src-hole": _page(lambda w, at: w.page(at.src) == HOLE),
    "src-not-exclusive": _page(lambda w, at: w.page(at.src) == COW),
    "src-marker": _page(lambda w, at: w.page(at.src) in MARKERS),
    # what the move did
    "move-unwritable": lambda w, at: w.call.arg in (ARG_MOVE_UNWRITABLE, ARG_UNREADABLE),
    "partial": lambda w, at: w.moved > 0 and w.error is not None,
}


def predict(spec: Spec, machine: Machine, layout: Layout, call: Call, arena: Arena) -> Prediction:
    """What the kernel `machine.version` answers to `call` on `layout`, by
    the spec."""
    w = World(machine, layout, call, arena, _known_mode(spec))
    walker = _Walker(spec, machine.version)
    unknown = sorted({s.condition for s in spec.precedence} - CONDITIONS.keys())
    if unknown:
        raise OracleError(f"the spec's precedence names conditions the oracle cannot evaluate: "
                          f"{', '.join(unknown)}")

    decided = None
    for stage in ("call", "range", "vma"):
        decided = walker.first(stage, w, None)
        if decided is not None:
            break
    if decided is None:
        decided = walker.walk_pages(w)
    w.error = decided
    final = decided or walker.success()
    result = walker.first("result", w, None)
    if result is not None and final.expectation.move in WRITTEN:
        return _outcome(w, result)
    if result is not None and final.expectation.move is None:
        return replace(_outcome(w, final), alternatives=(result,))
    return _outcome(w, final)


class _Walker:
    def __init__(self, spec: Spec, version: Version) -> None:
        self.spec, self.version = spec, version
        self.flags = {f.name: f.value for fs in spec.flags for f in fs.values}

    def expectation(self, behaviour: str) -> Expectation | None:
        return self.spec.behaviour(behaviour).expectation_for(self.version)

    def decide(self, step: Step, w: World, at: Cursor | None) -> Decision | None:
        """The step's decision, if its condition holds on this kernel."""
        exp = self.expectation(step.behaviour)
        if exp is None or not CONDITIONS[step.condition](w, at):
            return None
        if step.unless is not None and w.call.mode & self.flags[step.unless]:
            if step.otherwise is None:
                return None
            other = self.expectation(step.otherwise)
            return Decision(step, step.otherwise, other) if other is not None else None
        return Decision(step, step.behaviour, exp)

    def first(self, stage: str, w: World, at: Cursor | None) -> Decision | None:
        for step in self.spec.precedence:
            if step.stage == stage and (d := self.decide(step, w, at)) is not None:
                return d
        return None

    def walk_pages(self, w: World) -> Decision | None:
        """Each page in address order: the first page step that holds
        decides it; an error stops the walk, a success (or no step) moves
        the page.  Returns the error that stopped it, or None."""
        ps = w.geo.page_size
        for k in range(w.len // ps):
            at = Cursor(k, w.dst + k * ps, w.src + k * ps)
            d = self.first("page", w, at)
            if d is not None and d.expectation.errno is not None:
                return d
            w.move(at)
            w.moved += ps
        return None

    def success(self) -> Decision:
        name = self.spec.precedence_success
        if name is None:
            raise OracleError("the spec's precedence names no success behaviour")
        exp = self.expectation(name)
        if exp is None:
            raise OracleError(f"{name} has no expectation for Linux {self.version}")
        return Decision(None, name, exp)


def _outcome(w: World, d: Decision) -> Prediction:
    exp = d.expectation
    value: int | None = None
    stated = exp.move is not None
    if exp.move == "len":
        value = w.call.length(w.geo) % (1 << 64)
    elif exp.move == "-errno":
        value = -getattr(errno_mod, exp.errno or "", 0)
    elif exp.move == "moved-bytes":
        value = w.moved
    elif exp.move == "untouched":
        value = None
    elif exp.move is not None:
        raise OracleError(f"{d.behaviour}: the oracle does not know the move value {exp.move!r}")
    return Prediction(exp.errno, value, stated, w.pages(), w.moved, d)
