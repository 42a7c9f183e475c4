"""Hypothesis strategies for the fuzzer's cases: a layout and a call on it.

Most cases should reach the page checks (a registered anonymous dst, an
anonymous src, page-aligned ranges inside them) while every odd corner
stays reachable, and a failure should shrink towards plain anonymous pages,
one page, mode 0.  Each choice is a table (`_weighted`) in which the plain
values come first and fill most of it, and the odd ones take the rest.

A Hypothesis draw costs a few tenths of a millisecond, more than building
a small layout for real, so the choices of one mapping, or of one address,
share a draw: one integer read as digits, one digit per table (`_digits`).
Hypothesis draws the low digits evenly and the high ones mostly as 0, and
shrinks the whole number, high digits first, towards 0: so the choices that
need variety are the low digits, and every table's first entry is its
plainest.  The strategies are built once per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from math import prod
from typing import Any

from hypothesis import strategies as st

from .layout import (
    ANON,
    ARG_MOVE_UNWRITABLE,
    ARG_OK,
    ARG_UNREADABLE,
    COW,
    FILE,
    GUARD,
    HOLE,
    HUGE_STATES,
    NONE,
    OTHER,
    OTHER_PROCESS,
    OWNER,
    POISON,
    PRESENT,
    SHARED,
    SPECIAL_ADDRESSES,
    SPECIAL_LENGTHS,
    SWAPPED,
    THIS,
    WP_MARKER,
    ZERO,
    Addr,
    Call,
    Features,
    Geometry,
    Layout,
    Vma,
    normalized,
)

MAX_VMAS = 4
MAX_SMALL_PAGES = 6
Table = Sequence[Any]


def _weighted(common: Table, rare: Table = (), odds: int = 1) -> Table:
    """A table of `common` (each in turn), then the `rare` values, which
    take one entry in about `odds` together."""
    size = max(len(rare) * odds, len(common) + len(rare))
    return [common[i % len(common)] for i in range(size - len(rare))] + list(rare)


def _digits(*tables: Table) -> st.SearchStrategy[tuple[Any, ...]]:
    """One draw, read as one digit per table (the first table lowest)."""
    def read(n: int) -> tuple[Any, ...]:
        out = []
        for t in tables:
            n, d = divmod(n, len(t))
            out.append(t[d])
        return tuple(out)
    return st.integers(0, prod(len(t) for t in tables) - 1).map(read)


class Strategies:
    """Every strategy of a run, for one machine."""

    def __init__(self, features: Features, geo: Geometry, flags: tuple[int, ...]) -> None:
        self.features, self.geo = features, geo
        ps, pmd = geo.page_size, geo.pmd_pages
        shift = _weighted((0,), (1, 2, 3), 3)
        api_pending = _weighted(((True, False),), ((False, False), (True, True)), 25)
        self.header = _digits(shift, api_pending)
        self.count = st.integers(1, MAX_VMAS)

        kind_prot = _weighted(((ANON, "rw"),), ((SHARED, "rw"), (FILE, "rw"), (ANON, "r"), (ANON, "rwx"),
                                               (FILE, "r"), (SHARED, "r")), 3)
        owner = _weighted((THIS, NONE), (OTHER,), 8)
        lock_huge = _weighted(((False, False),), ((True, False),) + (((False, True),) * 2 if features.thp else ()), 4)
        gap = [(pages, unmapped) for pages in range(4) for unmapped in (False, True)]
        boundary = _weighted((False,), (True,), 5)
        empty = _weighted((False,), (True,), 6)   # every page a hole: no page table in its span
        self.attrs = _digits(owner, lock_huge, kind_prot, boundary, empty, gap)
        # pages: mostly holes where the mapping is registered (a dst), mostly present elsewhere (a src)
        odd = (ZERO, COW, SWAPPED, WP_MARKER, POISON, GUARD)
        self.small_pages = {
            registered: _digits(range(1, MAX_SMALL_PAGES + 1),
                                *[_weighted(common, odd, 3)] * MAX_SMALL_PAGES)
            for registered, common in ((False, (PRESENT, PRESENT, HOLE)), (True, (HOLE, HOLE, PRESENT)))}
        self.huge_state = st.sampled_from(HUGE_STATES)

        # an address: a page of a mapping (the index taken modulo its size),
        # next to one, unaligned, or an absolute address
        place = _weighted((("page", 0),), tuple(("page", o) for o in (1, 8, ps - 1, -8)) +
                          (("before", 0), ("after", 0)) + tuple((s, 0) for s in SPECIAL_ADDRESSES), 8)
        huge_page = (0, 1, pmd // 2, pmd - 1)
        self.addr = _digits(place, range(MAX_VMAS), range(MAX_SMALL_PAGES), huge_page)
        self.overlap = st.sampled_from(_weighted((None,), (0, 1, -1), 5))
        # a length: mostly one that fits in dst's mapping from dst ("fit"), in pages
        length = _weighted([("fit", 0, None)], [(0, 0, None), (1, 1, None), (2, -1, None), (1, ps // 2, None),
                                                (MAX_SMALL_PAGES + 1, 0, None)] +
                           [(0, 0, s) for s in SPECIAL_LENGTHS], 8)
        self.length = _digits(range(MAX_SMALL_PAGES), length)
        self.huge_length = st.sampled_from(_weighted(
            [(pmd, 0, None), (1, 0, None), (2, 0, None)], [(pmd - 1, 0, None), (pmd // 2, 0, None),
                                                           (pmd + 1, 0, None)], 2))
        modes = sorted({sum(f for i, f in enumerate(flags) if n >> i & 1) for n in range(1 << len(flags))})
        mode = _weighted(modes, (1 << 2, 1 << 31, 1 << 63, (1 << 2) | modes[-1]), 8)
        arg_caller = _weighted(((ARG_OK, OWNER),), ((ARG_UNREADABLE, OWNER), (ARG_MOVE_UNWRITABLE, OWNER),
                                                    (ARG_OK, OTHER_PROCESS)), 12)
        self.mode = _digits(arg_caller, mode)
        self.vma = _vma(self)
        self.cases = _layout(self).flatmap(lambda layout: st.tuples(st.just(layout), _call(self, layout)))


@st.composite
def _vma(draw: st.DrawFn, s: Strategies) -> Vma:
    owner, (mlocked, huge), (kind, prot), boundary, empty, (gap, unmapped) = draw(s.attrs)
    if huge:
        return Vma((draw(s.huge_state),) * s.geo.pmd_pages, ANON, prot, owner, mlocked, True, gap, unmapped)
    count, *states = draw(s.small_pages[owner != NONE])
    pages = (HOLE,) * count if empty else tuple(states[:count])
    return Vma(pages, kind, prot, owner, mlocked, False, gap, unmapped, boundary)


@st.composite
def _layout(draw: st.DrawFn, s: Strategies) -> Layout:
    shift, (api, pending) = draw(s.header)
    vmas = tuple(draw(s.vma) for _ in range(draw(s.count)))
    return normalized(Layout(vmas, shift, api, pending), s.geo, s.features)


def _addr(draw: st.DrawFn, s: Strategies, layout: Layout, pages: int) -> Addr:
    """An address for a call of `pages` pages (0: any): mostly a page from
    which the range fits in its mapping."""
    (place, offset), vma, small_page, huge_page = draw(s.addr)
    if place in SPECIAL_ADDRESSES:
        return Addr(0, 0, 0, place)
    vma %= len(layout.vmas)
    size = len(layout.vmas[vma].pages)
    page = huge_page if size > MAX_SMALL_PAGES else small_page % max(1, size - pages + 1)
    return Addr(vma, {"before": -1, "after": size}.get(place, page), offset)


@st.composite
def _call(draw: st.DrawFn, s: Strategies, layout: Layout) -> Call:
    dst = _addr(draw, s, layout, 1)
    if dst.special is None and layout.vmas[dst.vma].huge:
        pages, len_offset, len_special = draw(s.huge_length)
        if dst.page:
            dst = replace(dst, page=0 if pages > 2 else dst.page)
    else:
        spread, (pages, len_offset, len_special) = draw(s.length)
        if pages == "fit":
            room = len(layout.vmas[dst.vma].pages) - dst.page if dst.special is None else 1
            pages = 1 + spread % max(1, room)
    overlap = draw(s.overlap)
    if overlap is not None and dst.special is None:
        src = Addr(dst.vma, dst.page + overlap, dst.offset)
    else:
        src = _addr(draw, s, layout, pages)
    (arg, caller), mode = draw(s.mode)
    return Call(dst, src, pages, len_offset, len_special, mode, arg, caller)


def cases(features: Features, geo: Geometry, flags: tuple[int, ...]) -> st.SearchStrategy[tuple[Layout, Call]]:
    return Strategies(features, geo, flags).cases
