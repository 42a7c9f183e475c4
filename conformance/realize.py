"""A layout built for real, one call made on it, and what became of every
page: the fuzzer's side of the oracle.

`observe_case` runs in the fuzzer's worker process (conformance/worker.py),
one case after another: it maps the arena PROT_NONE afresh, which drops
whatever the previous case left (page tables included), and undoes on the
way out what else it made.  It maps the layout into the arena, puts each
page into its state (forking only for a page shared with a child, or a
call from another process), checks that
the kernel holds what the layout says (the mappings in /proc/self/maps, the
pages in pagemap), makes the call and reads back every page.  A layout the
machine would not build as described (no huge page given, a page not
swapped out, an absolute address that happens to be mapped) is reported as
unrealized, never as a disagreement.

Every page is written with a tag naming it (its label and a per-case
nonce), so a page read afterwards tells which page's contents it holds.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import pickle
import select
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from spec.model import Version

from . import memory
from .context import Context
from .layout import (
    ARENA_SPANS,
    ARG_MOVE_UNWRITABLE,
    ARG_UNREADABLE,
    BEFORE_FORK,
    COW,
    FILE,
    GUARD,
    HOLE,
    OTHER,
    OTHER_PROCESS,
    POISON,
    PRESENT,
    SHARED,
    SWAPPED,
    THIS,
    THP,
    THP_COW,
    WP_MARKER,
    ZERO,
    Arena,
    Call,
    Features,
    Geometry,
    Layout,
    Vma,
    spans,
)
from .memory import PM_PRESENT, PM_SWAP, PM_UFFD_WP, Region
from .observation import MOVE_SENTINEL
from .oracle import Machine, initial_content
from .uffd import Uffd, child_alive, open_fd

# Kernel facts beside the uABI under test, as memory.py keeps them.
PM_FRAME_MASK = memory.PM_FRAME_MASK
PM_MMAP_EXCLUSIVE = 1 << 56     # Documentation/admin-guide/mm/pagemap.rst
PM_GUARD_REGION = 1 << 58       # Linux 6.15
MLOCK_ONFAULT = 1               # include/uapi/asm-generic/mman-common.h
TAG_SIZE = 16
PAGEOUT_WAIT = 0.5              # seconds MADV_PAGEOUT gets to leave a swap entry
EVENT_WAIT = 2.0                # seconds an event gets to reach the userfaultfd


class Unrealized(Exception):
    """The machine did not build the layout as described."""


@dataclass
class Observed:
    errno: str | None = None
    move: int | None = None          # None: `move` still holds the sentinel
    pages: tuple[str, ...] = ()
    unrealized: str | None = None
    notes: list[str] = field(default_factory=list)


# --- set once, in the fuzzer --------------------------------------------------------

def geometry(ctx: Context) -> Geometry:
    ps = ctx.page_size
    return Geometry(ps, memory.thp_size() or ps * (ps // 8), task_size(ctx))


def task_size(ctx: Context) -> int:
    """The first address past the user address space: the highest page a
    mapping can be placed at, probed with address hints (a hint past the
    end is ignored).  It is 2^k or 2^k less one page on every 64-bit
    architecture Linux has."""
    lib, ps = ctx.lib, ctx.page_size
    best = 0
    for bits in range(36, 58):
        for addr in ((1 << bits) - 2 * ps, (1 << bits) - ps):
            got = lib.uabi_mmap(addr, ps, lib.PROT_NONE, lib.MAP_PRIVATE | lib.MAP_ANONYMOUS, -1, 0)
            if got >= 0:
                lib.uabi_munmap(got, ps)
                if got == addr:
                    best = addr + ps
    if not best:
        raise OSError(errno_mod.ENOMEM, "cannot find the end of the address space")
    return best


def machine(ctx: Context, version: Version | None = None) -> Machine:
    return Machine(version or ctx.version, geometry(ctx))


def features(probes: dict[str, Any]) -> Features:
    names = ("thp", "swap", "wp-unpopulated", "poison", "guard-regions")
    ok = {n: bool(probes.get(n) and probes[n].ok) for n in names}
    return Features(ok["thp"], ok["swap"], ok["wp-unpopulated"], ok["poison"], ok["guard-regions"],
                    tuple(n for n in names if ok[n]))


def reserve_arena(ctx: Context, geo: Geometry) -> Arena:
    """A PROT_NONE reservation whose used part, from one huge-page span
    before the base to ARENA_SPANS after it, lies inside one gigabyte (so
    the page-table levels above it exist or not for all of it alike)."""
    lib, pmd = ctx.lib, geo.pmd_size
    used = (ARENA_SPANS + 1) * pmd
    size = 2 * used + pmd
    start = lib.uabi_mmap(0, size, lib.PROT_NONE,
                          lib.MAP_PRIVATE | lib.MAP_ANONYMOUS | lib.MAP_NORESERVE, -1, 0)
    if start < 0:
        raise OSError(-start, "mmap of the arena")
    gig = 1 << 30
    lo = -(-start // pmd) * pmd
    if lo // gig != (lo + used - 1) // gig:
        lo = (lo + used - 1) // gig * gig
    return Arena(start, start + size, lo + pmd)


# --- in the child ---------------------------------------------------------------------

def tag(label: str, nonce: bytes) -> bytes:
    return f"~{label}~{nonce.hex()}".encode().ljust(TAG_SIZE, b"~")


@dataclass
class _Built:
    ctx: Context
    geo: Geometry
    arena: Arena
    layout: Layout
    nonce: bytes
    addrs: list[int] = field(default_factory=list)      # every layout page, in label order
    labels: tuple[str, ...] = ()
    uffds: dict[str, Uffd] = field(default_factory=dict)
    tags: dict[bytes, str] = field(default_factory=dict)   # each page's tag, to its label

    def vma_pages(self, states: tuple[str, ...] | None = None) -> Iterator[tuple[int, Vma, int, int, str]]:
        """(mapping index, mapping, page index, address, state) of every
        page, or of the pages in `states`."""
        ps = self.geo.page_size
        for i, (v, start) in enumerate(zip(self.layout.vmas, self.layout.starts(self.geo), strict=True)):
            if states is not None and (v.pages[0] not in states if v.huge else not set(states) & set(v.pages)):
                continue
            for k, state in enumerate(v.pages):
                if states is None or state in states:
                    yield i, v, k, self.arena.base + (start + k) * ps, state


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise Unrealized(f"{what}: {os.strerror(-ret)}")
    return ret


_libc = ctypes.CDLL(None, use_errno=True)


def _mlock_onfault(addr: int, length: int) -> None:
    if _libc.mlock2(ctypes.c_void_p(addr), ctypes.c_size_t(length), MLOCK_ONFAULT) < 0:
        raise Unrealized(f"mlock2: {os.strerror(ctypes.get_errno())}")


def _prot(ctx: Context, prot: str) -> int:
    lib = ctx.lib
    return (lib.PROT_READ if "r" in prot else 0) | (lib.PROT_WRITE if "w" in prot else 0) | \
        (lib.PROT_EXEC if "x" in prot else 0)


def _map(b: _Built) -> None:
    lib, ps = b.ctx.lib, b.geo.page_size
    rw = lib.PROT_READ | lib.PROT_WRITE
    for i, (v, start) in enumerate(zip(b.layout.vmas, b.layout.starts(b.geo), strict=True)):
        addr, length = b.arena.base + start * ps, len(v.pages) * ps
        what = f"mmap {b.layout.label(i)}"
        if v.kind == FILE:
            fd = os.memfd_create(f"uffd-oracle-{b.layout.label(i)}", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, length)
                _check(lib.uabi_mmap(addr, length, rw, lib.MAP_PRIVATE | lib.MAP_FIXED, fd, 0), what)
            finally:
                os.close(fd)
        else:
            share = lib.MAP_SHARED if v.kind == SHARED else lib.MAP_PRIVATE
            _check(lib.uabi_mmap(addr, length, rw, share | lib.MAP_ANONYMOUS | lib.MAP_FIXED, -1, 0), what)
        if v.huge:
            _check(lib.uabi_madvise(addr, length, lib.MADV_HUGEPAGE), "MADV_HUGEPAGE")
        if v.gap and v.unmapped:
            _check(lib.uabi_munmap(addr - v.gap * ps, v.gap * ps), "munmap of a gap")


def _runs(addrs: list[int], ps: int) -> list[list[int]]:
    """Consecutive pages grouped, so each run is written or read at once."""
    runs: list[list[int]] = []
    for a in addrs:
        if runs and runs[-1][-1] + ps == a:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def _populate(b: _Built, states: tuple[str, ...]) -> None:
    """Touch the pages in `states`: read a zero page, write the others'
    tags (a run of pages in one write, so a huge page is one fault)."""
    ps = b.geo.page_size
    tags: dict[int, bytes] = {}
    for i, _v, k, addr, state in b.vma_pages(states):
        if state == ZERO:
            b.ctx.lib.uabi_touch_read(addr)
        else:
            tags[addr] = tag(f"{b.layout.label(i)}{k}", b.nonce).ljust(ps, b"\0")
    for run in _runs(list(tags), ps):
        memory.write(b.ctx, run[0], b"".join(tags[a] for a in run))


def _uffd(b: _Built, features: Features, *, api: bool, extra: int = 0) -> Uffd:
    lib = b.ctx.lib
    if not api:
        return Uffd(b.ctx, open_fd(b.ctx))
    wanted = extra
    if features.wp_markers:
        wanted |= lib.UFFD_FEATURE_WP_UNPOPULATED
    if features.poison:
        wanted |= lib.UFFD_FEATURE_POISON
    try:
        return Uffd.open(b.ctx, features=wanted)
    except OSError as exc:
        raise Unrealized(f"userfaultfd: {exc}") from None


def _marks_and_locks(b: _Built, features: Features) -> None:
    """Final protections, guard regions, mlock, swap-out, registration and
    the markers that need it, in the order the kernel accepts them."""
    ctx, lib, ps = b.ctx, b.ctx.lib, b.geo.page_size
    starts = b.layout.starts(b.geo)
    for _i, _v, _k, addr, _state in b.vma_pages((GUARD,)):
        _check(lib.uabi_madvise(addr, ps, memory.MADV_GUARD_INSTALL), "MADV_GUARD_INSTALL")
    for v, start in zip(b.layout.vmas, starts, strict=True):
        addr, length = b.arena.base + start * ps, len(v.pages) * ps
        if v.prot != "rw":
            _check(lib.uabi_mprotect(addr, length, _prot(ctx, v.prot)), "mprotect")
        if v.mlocked:
            _mlock_onfault(addr, length)
    b.uffds[THIS] = _uffd(b, features, api=b.layout.api,
                          extra=lib.UFFD_FEATURE_EVENT_REMOVE if b.layout.pending_event else 0)
    if any(v.uffd == OTHER for v in b.layout.vmas):
        b.uffds[OTHER] = _uffd(b, features, api=True)
    for i, (v, start) in enumerate(zip(b.layout.vmas, starts, strict=True)):
        if not v.registered:
            continue
        mode = lib.UFFDIO_REGISTER_MODE_MISSING | (lib.UFFDIO_REGISTER_MODE_WP if v.wp else 0)
        region = Region(b.arena.base + start * ps, len(v.pages) * ps, _prot(ctx, v.prot),
                        b.layout.label(i), ps)
        try:
            b.uffds[v.uffd].register(region, mode)
        except OSError as exc:
            raise Unrealized(str(exc)) from None
    for _i, v, _k, addr, state in b.vma_pages((WP_MARKER, POISON)):
        try:
            if state == WP_MARKER:
                b.uffds[v.uffd].writeprotect(addr, ps)
            elif state == POISON:
                b.uffds[v.uffd].poison(addr, ps)
        except OSError as exc:
            raise Unrealized(str(exc)) from None


def _maps(lo: int, hi: int) -> list[tuple[int, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split()[:2]
            a, z = (int(x, 16) for x in rng.split("-"))
            if a < hi and z > lo:
                out.append((a, z, perms))
    return out


def _verify_mappings(b: _Built, addresses: dict[str, int]) -> None:
    arena = b.arena
    want = [(s.start, s.end, s.perms) for s in spans(b.layout, b.geo, arena)]
    have = _maps(arena.start, arena.end)
    if have != want:
        raise Unrealized(f"the arena's mappings are {_show(have)}, not {_show(want)}")
    for name, addr in addresses.items():
        if not arena.start <= addr < arena.end and _maps(addr, addr + 1):
            raise Unrealized(f"{name} {addr:#x} is mapped in this process")


def _show(maps: list[tuple[int, int, str]]) -> str:
    return " ".join(f"{a:#x}-{z:#x}:{p}" for a, z, p in maps)


def _entries(b: _Built) -> list[int]:
    out: list[int] = []
    ps = b.geo.page_size
    for v, start in zip(b.layout.vmas, b.layout.starts(b.geo), strict=True):
        out += memory.pagemap(b.arena.base + start * ps, len(v.pages), ps)
    return out


def _tags(b: _Built, entries: list[int]) -> list[str]:
    """What each present page holds: the label of the page whose tag it
    carries, "zero", or "data:..."; "" for a page not present (never read:
    a registered hole would block on the fault)."""
    ps = b.geo.page_size
    if not b.tags:
        b.tags = {tag(label, b.nonce): label for label in b.labels}
    present = [a for a, e in zip(b.addrs, entries, strict=True) if e & PM_PRESENT]
    seen: dict[int, str] = {}
    for run in _runs(present, ps):
        data = memory.read(b.ctx, run[0], len(run) * ps)
        for n, addr in enumerate(run):
            chunk = data[n * ps:n * ps + TAG_SIZE]
            seen[addr] = b.tags.get(chunk) or _symbol(b, chunk)
    return [seen.get(a, "") for a in b.addrs]


def _symbol(b: _Built, data: bytes) -> str:
    if data == bytes(TAG_SIZE):
        return "zero"
    parts = data.decode("ascii", "replace").strip("~").split("~")
    if len(parts) == 2 and parts[1] == b.nonce.hex():
        return parts[0]
    return f"data:{data[:8].hex()}"


def _verify_pages(b: _Built, entries: list[int]) -> dict[int, str]:
    """Every page as the layout says; returns what each swap or marker
    entry (by its pagemap bits) stands for, to name them afterwards."""
    names: dict[int, str] = {}
    initial = [s for v in b.layout.vmas for s in v.pages]
    for label, state, entry, tagged in zip(b.labels, initial, entries, _tags(b, entries), strict=True):
        present, swap = bool(entry & PM_PRESENT), bool(entry & (PM_SWAP | PM_GUARD_REGION))
        seen = tagged if present else ("hole" if not swap else "entry")
        ok = {
            HOLE: not present and not swap,
            ZERO: present and seen == "zero",
            SWAPPED: swap and not present and not entry & PM_UFFD_WP,
            WP_MARKER: swap and not present and bool(entry & PM_UFFD_WP),
            POISON: swap and not present,
            GUARD: swap and not present,
        }.get(state, present and seen == label)
        if ok and state in (COW, THP_COW) and entry & PM_MMAP_EXCLUSIVE:
            ok = False
        if not ok:
            raise Unrealized(f"{label} should be {state}, pagemap {entry:#x} ({seen})")
        if swap:
            names[_entry_key(entry)] = initial_content(label, state)
    for i, _v, k, addr, _state in b.vma_pages((THP,)):
        if k == 0:
            flags = memory.page_flags(addr, b.geo.page_size)
            if flags is not None and not flags & memory.KPF_THP:
                raise Unrealized(f"{b.layout.label(i)} got no huge page")
    return names


def _entry_key(entry: int) -> int:
    return entry & (PM_SWAP | PM_GUARD_REGION | PM_UFFD_WP | PM_FRAME_MASK)


def _pages_after(b: _Built, names: dict[int, str]) -> tuple[str, ...]:
    out = []
    entries = _entries(b)
    for entry, tagged in zip(entries, _tags(b, entries), strict=True):
        if entry & PM_PRESENT:
            out.append(tagged)
        elif entry & (PM_SWAP | PM_GUARD_REGION):
            out.append(names.get(_entry_key(entry), f"entry:{entry:#x}"))
        else:
            out.append("hole")
    return tuple(out)


def _argument_pages(b: _Built, call: Call, stack: ExitStack) -> Region | None:
    """The pages the struct uffdio_move goes on, mapped before the layout
    so that no later mmap can land in the layout's unmapped gaps."""
    pages = {ARG_UNREADABLE: 1, ARG_MOVE_UNWRITABLE: 2}.get(call.arg)
    if pages is None:
        return None
    lib, length = b.ctx.lib, pages * b.geo.page_size
    addr = _check(lib.uabi_mmap(0, length, lib.PROT_READ | lib.PROT_WRITE,
                                lib.MAP_PRIVATE | lib.MAP_ANONYMOUS, -1, 0), "mmap of the argument")
    stack.callback(lib.uabi_munmap, addr, length)
    return Region(addr, length, lib.PROT_READ | lib.PROT_WRITE, "arg", b.geo.page_size)


def _argument(b: _Built, call: Call, pages: Region | None, dst: int, src: int, length: int) -> Any:
    """The struct uffdio_move where the call wants it: in Python's heap, on
    a page made unreadable for the call, or with `move` on a read-only page."""
    ctx, uffd = b.ctx, b.uffds[THIS]
    if call.arg == ARG_UNREADABLE and pages is not None:
        return uffd.move_arg(dst, src, length, call.mode, at=pages.addr)
    if call.arg == ARG_MOVE_UNWRITABLE and pages is not None:
        at = pages.page(1) - ctx.spec.struct.field("move").offset
        arg = uffd.move_arg(dst, src, length, call.mode, at=at)
        memory.mprotect(ctx, pages.page(1), b.geo.page_size, ctx.lib.PROT_READ)
        return arg
    return uffd.move_arg(dst, src, length, call.mode)


def _call(b: _Built, call: Call, arg: Any, unreadable: Region | None) -> tuple[str | None, int]:
    ctx, uffd = b.ctx, b.uffds[THIS]
    if call.caller == OTHER_PROCESS:
        return _call_from_child(uffd, arg, unreadable)
    if unreadable is not None:
        memory.mprotect(ctx, unreadable.addr, unreadable.length, ctx.lib.PROT_NONE)
    err = uffd.move(arg)
    if unreadable is not None:
        memory.mprotect(ctx, unreadable.addr, unreadable.length, ctx.lib.PROT_READ)
    return err, int(arg.move)


def _call_from_child(uffd: Uffd, arg: Any, unreadable: Region | None) -> tuple[str | None, int]:
    """The call made by a forked child, with the userfaultfd it inherited."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if unreadable is not None:
                memory.mprotect(uffd.ctx, unreadable.addr, unreadable.length, uffd.ctx.lib.PROT_NONE)
            err = uffd.move(arg)
            if unreadable is not None:
                memory.mprotect(uffd.ctx, unreadable.addr, unreadable.length, uffd.ctx.lib.PROT_READ)
            os.write(w, pickle.dumps((err, int(arg.move))))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if not data:
        raise Unrealized("the calling child died")
    result: tuple[str | None, int] = pickle.loads(data)
    return result


def reset_arena(ctx: Context, geo: Geometry, arena: Arena) -> None:
    """Map the arena's used part PROT_NONE again: whatever a case left
    there goes, page tables included (no mapping is left in their span)."""
    lib = ctx.lib
    lo = arena.base - geo.pmd_size
    _check(lib.uabi_mmap(lo, (ARENA_SPANS + 1) * geo.pmd_size, lib.PROT_NONE,
                         lib.MAP_PRIVATE | lib.MAP_ANONYMOUS | lib.MAP_NORESERVE | lib.MAP_FIXED, -1, 0),
           "mmap of the arena")


def observe_case(ctx: Context, geo: Geometry, arena: Arena, features: Features, layout: Layout,
                 call: Call) -> Observed:
    """Build `layout` in the arena, make `call`, and read back every page.

    Everything the case made is undone on the way out (the child sharing
    pages, the userfaultfds, the argument's pages), and the arena is
    reserved afresh before the case, so cases can run one after the other
    in one process."""
    b = _Built(ctx, geo, arena, layout, os.urandom(4))
    b.labels = layout.labels()
    b.addrs = [addr for *_, addr, _state in b.vma_pages()]
    dst, src = (a.resolve(layout, geo, arena) % (1 << 64) for a in (call.dst, call.src))
    length = call.length(geo) % (1 << 64)
    try:
        with ExitStack() as stack:
            reset_arena(ctx, geo, arena)
            stack.callback(lambda: [u.close() for u in b.uffds.values()])
            pages = _argument_pages(b, call, stack)
            _map(b)
            if any(s in BEFORE_FORK for v in layout.vmas for s in v.pages):
                _populate(b, BEFORE_FORK)
                stack.enter_context(child_alive())
            _populate(b, (PRESENT, ZERO, SWAPPED, THP))
            _swap_out(b)
            _marks_and_locks(b, features)
            arg = _argument(b, call, pages, dst, src, length)
            specials = {n: a for n, a in (("dst", dst), ("src", src)) if getattr(call, n).special is not None}
            _verify_mappings(b, specials)
            names = _verify_pages(b, _entries(b))
            with _pending_event(b):
                err, moved = _call(b, call, arg, pages if call.arg == ARG_UNREADABLE else None)
            after = _pages_after(b, names)
    except Unrealized as exc:
        return Observed(unrealized=str(exc))
    return Observed(err, None if moved == MOVE_SENTINEL else moved, after)


@contextmanager
def _pending_event(b: _Built) -> Iterator[None]:
    """MADV_DONTNEED on the layout's zapped page, from a thread: it raises
    UFFD_EVENT_REMOVE and waits until the event is read, which is done
    after the block; the page is zapped only then."""
    zap = b.layout.zapped()
    if zap is None:
        yield
        return
    lib, ps, uffd = b.ctx.lib, b.geo.page_size, b.uffds[THIS]
    addr = b.arena.base + (b.layout.starts(b.geo)[zap[0]] + zap[1]) * ps
    thread = threading.Thread(target=lambda: lib.uabi_madvise(addr, ps, lib.MADV_DONTNEED), daemon=True)
    thread.start()
    try:
        if not select.select([uffd.fd], [], [], EVENT_WAIT)[0]:
            raise Unrealized("MADV_DONTNEED raised no event")
        yield
    finally:
        uffd.read_msg(EVENT_WAIT)
        thread.join(EVENT_WAIT)
    if thread.is_alive():
        raise Unrealized("MADV_DONTNEED did not return after its event was read")


def _swap_out(b: _Built) -> None:
    lib, ps = b.ctx.lib, b.geo.page_size
    swapped = [a for _i, _v, _k, a, _s in b.vma_pages((SWAPPED,))]
    for addr in swapped:
        _check(lib.uabi_madvise(addr, ps, lib.MADV_PAGEOUT), "MADV_PAGEOUT")

    def done() -> bool:
        return all(memory.pagemap(a, 1, ps)[0] & PM_SWAP for a in swapped)
    if swapped and not memory.wait_until(done, PAGEOUT_WAIT, 0.01):
        raise Unrealized("MADV_PAGEOUT left a page in memory")
