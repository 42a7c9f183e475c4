"""The world a UFFDIO_MOVE call meets, described, and the call itself.

A layout is a few mappings placed one after the other, at page offsets
chosen relative to one reserved area (the arena), each with its kind,
protection, registration and lock, and the state of each of its pages.
Whatever lies between them stays reserved (a PROT_NONE mapping) unless the
layout unmaps it.  The oracle predicts a call on a layout; the fuzzer
builds the same layout for real in a forked child and makes the call; the
reproducer writes it as C.  All three read these objects, so a layout means
one thing everywhere.

Addresses are relative: a call names a mapping and a page offset (or one of
a few absolute addresses, such as the end of the address space), so the same
case can be rebuilt anywhere.  The arena starts on a huge-page boundary and
lies inside one gigabyte, so which page tables exist follows from the layout
alone: the arena's page-table spans belong to it and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

# The state of one page before the call.
HOLE = "hole"            # never touched: no page-table entry
PRESENT = "present"      # written: a page of this process alone
ZERO = "zero"            # read, never written: the shared zero page
COW = "cow"              # written, then shared with a child of fork() that is still alive
SWAPPED = "swapped"      # written, then paged out to swap
WP_MARKER = "wp-marker"  # a userfaultfd write-protect marker on a hole
POISON = "poison"        # a poison marker (UFFDIO_POISON) on a hole
GUARD = "guard"          # a guard region (MADV_GUARD_INSTALL) on a hole
THP = "thp"              # part of a transparent huge page of this process alone
THP_COW = "thp-cow"      # part of a huge page shared with a child of fork()

MARKERS = (WP_MARKER, POISON, GUARD)
SMALL_STATES = (PRESENT, HOLE, ZERO, COW, SWAPPED, WP_MARKER, POISON, GUARD)
HUGE_STATES = (THP, HOLE, THP_COW)
BEFORE_FORK = (COW, THP_COW)

# The mapping's kind, protection, and the userfaultfd it is registered with.
ANON, SHARED, FILE = "anon", "shared", "file"   # MAP_PRIVATE|MAP_ANONYMOUS, MAP_SHARED|MAP_ANONYMOUS, MAP_PRIVATE memfd
KINDS = (ANON, SHARED, FILE)
PROTS = ("rw", "r", "rwx")
THIS, NONE, OTHER = "this", "none", "other"
OWNERS = (THIS, NONE, OTHER)

# Where the struct uffdio_move lies, and which process makes the call.
ARG_OK, ARG_UNREADABLE, ARG_MOVE_UNWRITABLE = "ok", "unreadable", "move-unwritable"
ARGS = (ARG_OK, ARG_UNREADABLE, ARG_MOVE_UNWRITABLE)
OWNER, OTHER_PROCESS = "owner", "other-process"
CALLERS = (OWNER, OTHER_PROCESS)

# Absolute addresses a call may name instead of a place in the layout.
SPECIAL_ADDRESSES = ("null", "first-page", "task-last-page", "task-end", "high", "top")
SPECIAL_LENGTHS = ("task-size", "high", "top")

# Arena size, in huge-page spans; the layout must fit in it.
ARENA_SPANS = 8
MAX_HUGE = 2


@dataclass(frozen=True)
class Geometry:
    """The machine's sizes the layout depends on."""

    page_size: int
    pmd_size: int        # the span of one page table, and of a PMD-mapped huge page
    task_size: int       # the first address past the user address space

    @property
    def pmd_pages(self) -> int:
        return self.pmd_size // self.page_size

    def special(self, name: str) -> int:
        return {
            "null": 0,
            "first-page": self.page_size,
            "task-last-page": self.task_size - self.page_size,
            "task-end": self.task_size,
            "high": 1 << 63,
            "top": (1 << 64) - self.page_size,
        }[name]

    def special_length(self, name: str) -> int:
        return {"task-size": self.task_size, "high": 1 << 63, "top": (1 << 64) - self.page_size}[name]


@dataclass(frozen=True)
class Arena:
    """The reserved area: [start, end), PROT_NONE where nothing else is
    mapped; the layout's page offsets count from `base`, a huge-page
    boundary one span after `start`."""

    start: int
    end: int
    base: int


@dataclass(frozen=True)
class Vma:
    pages: tuple[str, ...]
    kind: str = ANON
    prot: str = "rw"
    uffd: str = THIS
    mlocked: bool = False      # mlock2(MLOCK_ONFAULT): VM_LOCKED, no page faulted in
    huge: bool = False         # MADV_HUGEPAGE over one whole aligned huge-page span
    gap: int = 0               # pages between the previous mapping and this one
    unmapped: bool = False     # those pages are unmapped (else they stay reserved, PROT_NONE)
    boundary: bool = False     # starts on the next huge-page boundary (a huge mapping always does)

    @property
    def registered(self) -> bool:
        return self.uffd != NONE

    @property
    def wp(self) -> bool:
        """Registered for write-protect too (its markers need it)."""
        return WP_MARKER in self.pages


@dataclass(frozen=True)
class Layout:
    vmas: tuple[Vma, ...]
    shift: int = 0             # pages before a huge-page boundary where the first gap starts
    api: bool = True           # UFFDIO_API done on this userfaultfd
    pending_event: bool = False  # an unread UFFD_EVENT_REMOVE (MADV_DONTNEED on a registered page)

    @staticmethod
    def label(index: int) -> str:
        return chr(ord("A") + index)

    def starts(self, geo: Geometry) -> tuple[int, ...]:
        """The first page of each mapping, counted from the arena base."""
        out = []
        cursor = (geo.pmd_pages - self.shift) % geo.pmd_pages
        for v in self.vmas:
            start = cursor + v.gap
            if v.huge or v.boundary:
                start = -(-start // geo.pmd_pages) * geo.pmd_pages
            out.append(start)
            cursor = start + len(v.pages)
        return tuple(out)

    def zapped(self) -> tuple[int, int] | None:
        """The page MADV_DONTNEED hits to leave an event pending: a page of
        the first unlocked small mapping registered with this userfaultfd,
        its first hole, else its first page that a zap leaves a hole
        (markers may survive one)."""
        if not self.pending_event:
            return None
        for i, v in enumerate(self.vmas):
            if v.uffd == THIS and not v.mlocked and not v.huge and not v.wp:
                for wanted in (HOLE, PRESENT, ZERO, COW, SWAPPED):
                    if wanted in v.pages:
                        return i, v.pages.index(wanted)
        return None

    def initial(self) -> tuple[tuple[str, ...], ...]:
        """Each mapping's page states as the call finds them (the page the
        pending event zapped is a hole)."""
        out = [list(v.pages) for v in self.vmas]
        if (z := self.zapped()) is not None:
            out[z[0]][z[1]] = HOLE
        return tuple(tuple(p) for p in out)

    def labels(self) -> tuple[str, ...]:
        """A name for every page of the layout, in order: A0, A1, B0, ..."""
        return tuple(f"{self.label(i)}{k}" for i, v in enumerate(self.vmas) for k in range(len(v.pages)))

    def describe(self, geo: Geometry) -> list[str]:
        lines = []
        for i, (v, start) in enumerate(zip(self.vmas, self.starts(geo), strict=True)):
            attrs = [v.kind, v.prot, f"uffd={v.uffd}"]
            if v.mlocked:
                attrs.append("mlocked")
            if v.huge:
                attrs.append("huge")
            elif v.boundary:
                attrs.append("on a huge-page boundary")
            gap = f", {v.gap} {'unmapped' if v.unmapped else 'reserved'} before" if v.gap else ""
            lines.append(f"{self.label(i)}: pages {start}..{start + len(v.pages) - 1} ({' '.join(attrs)}{gap}): "
                         f"{_runs(v.pages)}")
        extras = [w for w, on in (("no UFFDIO_API", not self.api), ("event pending", self.pending_event)) if on]
        if extras:
            lines.append("userfaultfd: " + ", ".join(extras))
        return lines

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(tuple(Vma(**{**v, "pages": tuple(v["pages"])}) for v in d["vmas"]),
                   d.get("shift", 0), d.get("api", True), d.get("pending_event", False))


def _runs(pages: tuple[str, ...]) -> str:
    """"present present hole" as "present x2, hole"."""
    out: list[str] = []
    i = 0
    while i < len(pages):
        j = i
        while j < len(pages) and pages[j] == pages[i]:
            j += 1
        out.append(pages[i] if j - i == 1 else f"{pages[i]} x{j - i}")
        i = j
    return ", ".join(out)


@dataclass(frozen=True)
class Addr:
    """A page of the layout (mapping `vma`, page `page`, possibly outside
    the mapping) plus `offset` bytes, or an absolute address by name."""

    vma: int = 0
    page: int = 0
    offset: int = 0
    special: str | None = None

    def resolve(self, layout: Layout, geo: Geometry, arena: Arena) -> int:
        if self.special is not None:
            return geo.special(self.special) + self.offset
        start = layout.starts(geo)[self.vma]
        return arena.base + (start + self.page) * geo.page_size + self.offset

    def describe(self, layout: Layout) -> str:
        where = self.special or f"{layout.label(self.vma)}{self.page:+d}p"
        return where + (f"{self.offset:+d}" if self.offset else "")


@dataclass(frozen=True)
class Call:
    dst: Addr
    src: Addr
    pages: int = 1             # len, in pages ...
    len_offset: int = 0        # ... plus these bytes
    len_special: str | None = None  # or a length by name
    mode: int = 0
    arg: str = ARG_OK
    caller: str = OWNER

    def length(self, geo: Geometry) -> int:
        if self.len_special is not None:
            return geo.special_length(self.len_special) + self.len_offset
        return self.pages * geo.page_size + self.len_offset

    def describe(self, layout: Layout, geo: Geometry, mode_names: dict[int, str]) -> str:
        length = self.len_special or f"{self.pages}p"
        if self.len_offset:
            length += f"{self.len_offset:+d}"
        bits = [name for bit, name in sorted(mode_names.items()) if self.mode & bit]
        unknown = self.mode & ~sum(mode_names)
        if unknown:
            bits.append(f"{unknown:#x}")
        extras = [w for w, on in ((f"arg {self.arg}", self.arg != ARG_OK),
                                  ("called by another process", self.caller != OWNER)) if on]
        return (f"dst={self.dst.describe(layout)} src={self.src.describe(layout)} len={length} "
                f"mode={'|'.join(bits) or 0}" + "".join(f", {e}" for e in extras))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Call:
        return cls(**{**d, "dst": Addr(**d["dst"]), "src": Addr(**d["src"])})


@dataclass(frozen=True)
class Span:
    """A mapping as the kernel sees it: a layout mapping (index) or a
    piece of the reservation (index None: PROT_NONE, anonymous, private)."""

    start: int
    end: int
    index: int | None
    kind: str = ANON
    prot: str = ""
    uffd: str = NONE
    mlocked: bool = False

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    @property
    def perms(self) -> str:
        """As /proc/self/maps shows them."""
        return "".join(c if c in self.prot else "-" for c in "rwx") + ("s" if self.kind == SHARED else "p")


def spans(layout: Layout, geo: Geometry, arena: Arena) -> tuple[Span, ...]:
    """Every mapping of the arena, in address order: the layout's and the
    reserved pieces around them."""
    ps = geo.page_size
    placed: list[Span] = []
    holes: list[tuple[int, int]] = []
    for i, (v, start) in enumerate(zip(layout.vmas, layout.starts(geo), strict=True)):
        addr = arena.base + start * ps
        placed.append(Span(addr, addr + len(v.pages) * ps, i, v.kind, v.prot, v.uffd, v.mlocked))
        if v.unmapped and v.gap:
            holes.append((addr - v.gap * ps, addr))
    cuts = sorted([(s.start, s.end) for s in placed] + holes)
    out = list(placed)
    at = arena.start
    for lo, hi in cuts:
        if lo > at:
            out.append(Span(at, lo, None))
        at = max(at, hi)
    if at < arena.end:
        out.append(Span(at, arena.end, None))
    return tuple(sorted(out, key=lambda s: s.start))


def mergeable(a: Vma, b: Vma) -> bool:
    """Whether two adjacent mappings could become one VMA: same anonymous
    private kind and every flag alike.  The layout never places such a pair
    side by side, so its mappings are the kernel's VMAs."""
    return a.kind == b.kind == ANON and (a.prot, a.uffd, a.mlocked, a.huge, a.wp) == \
        (b.prot, b.uffd, b.mlocked, b.huge, b.wp)


@dataclass(frozen=True)
class Features:
    """What this machine can build: the optional page states."""

    thp: bool = False
    swap: bool = False
    wp_markers: bool = False
    poison: bool = False
    guard: bool = False
    names: tuple[str, ...] = field(default=(), compare=False)

    def states(self, kind: str, uffd: str) -> tuple[str, ...]:
        """The page states a small mapping of this kind can hold."""
        if kind != ANON:
            return (PRESENT, HOLE)
        ok = {PRESENT, HOLE, ZERO, COW}
        if self.swap:
            ok.add(SWAPPED)
        if uffd != NONE and self.wp_markers:
            ok.add(WP_MARKER)
        if uffd != NONE and self.poison:
            ok.add(POISON)
        if self.guard:
            ok.add(GUARD)
        return tuple(s for s in SMALL_STATES if s in ok)


def normalized(layout: Layout, geo: Geometry, features: Features) -> Layout:
    """The nearest layout that can be built as described: states the
    mapping cannot hold become holes, mergeable neighbours get a gap, huge
    mappings get their whole span in one state, a userfaultfd without
    UFFDIO_API registers nothing, and the layout fits in the arena."""
    vmas: list[Vma] = []
    huge_seen = 0
    for v in layout.vmas:
        if v.huge and (v.kind != ANON or not features.thp or huge_seen == MAX_HUGE):
            v = replace(v, huge=False, pages=v.pages[:8] or (HOLE,))
        if not layout.api and v.uffd == THIS:
            v = replace(v, uffd=NONE)
        if v.huge:
            huge_seen += 1
            state = v.pages[0] if v.pages and v.pages[0] in HUGE_STATES else HOLE
            v = replace(v, pages=(state,) * geo.pmd_pages)
        else:
            allowed = features.states(v.kind, v.uffd)
            v = replace(v, pages=tuple(p if p in allowed else HOLE for p in v.pages) or (HOLE,))
        if vmas and not v.gap and mergeable(vmas[-1], v):
            v = replace(v, gap=1)
        vmas.append(v)
    out = replace(layout, vmas=tuple(vmas), shift=layout.shift % geo.pmd_pages,
                  pending_event=layout.pending_event and layout.api)
    if out.pending_event and out.zapped() is None:
        out = replace(out, pending_event=False)
    end = out.starts(geo)[-1] + len(out.vmas[-1].pages)
    if end > ARENA_SPANS * geo.pmd_pages:
        raise ValueError(f"the layout needs {end} pages, more than the arena holds")
    return out
