"""Memory the checks set up, and what the kernel did to it.

A check maps its ranges with chosen flags, fills them with patterns no other
page shares, and snapshots them before and after the call: per page, the
present and swapped bits and the frame from /proc/self/pagemap, and a hash
of the contents of present pages.  `classify` turns two snapshots into the
spec's words (moved, moved-prefix, unchanged) or says what else it saw.

A page is read only when pagemap says it is present: reading a hole in a
registered range would block on a fault that nobody resolves, and reading a
swapped page would bring it back in.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .context import Context

# Kernel facts that are not part of the userfaultfd uABI and that this
# machine's C headers may lack.  They live here, and only here.
MADV_GUARD_INSTALL = 102      # include/uapi/asm-generic/mman-common.h, Linux 6.13
PM_PRESENT = 1 << 63          # Documentation/admin-guide/mm/pagemap.rst
PM_SWAP = 1 << 62
PM_UFFD_WP = 1 << 57
PM_FRAME_MASK = (1 << 55) - 1  # the PFN, or swap type and offset; 0 without CAP_SYS_ADMIN
KPF_KSM = 1 << 21             # /proc/kpageflags (include/uapi/linux/kernel-page-flags.h)
KPF_THP = 1 << 22
THP_SIZE_FILE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"


@dataclass(frozen=True)
class Region:
    """A mapping made for a check, between PROT_NONE guard mappings, so its
    ends are the ends of its VMA and it never merges with a neighbour."""

    addr: int
    length: int
    prot: int
    label: str
    page_size: int

    @property
    def pages(self) -> int:
        return self.length // self.page_size

    @property
    def end(self) -> int:
        return self.addr + self.length

    def page(self, index: int) -> int:
        return self.addr + index * self.page_size


@dataclass(frozen=True)
class PageState:
    present: bool
    swapped: bool          # also set for markers (uffd-wp, poison, guard): pagemap shows them as swap entries
    frame: int             # PFN of a present page, swap type/offset otherwise; 0 when hidden
    digest: bytes | None   # hash of the contents, for a present readable page
    uffd_wp: bool = False

    @property
    def hole(self) -> bool:
        return not self.present and not self.swapped

    def same(self, other: PageState) -> bool:
        return (self.present, self.swapped, self.frame, self.digest) == \
            (other.present, other.swapped, other.frame, other.digest)

    def describe(self) -> str:
        if self.present:
            return f"page {self.digest.hex()[:8] if self.digest else '?'}"
        if self.swapped:
            return f"swap/marker {self.frame:#x}"
        return "hole"


Snapshot = dict[int, PageState]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def mapping(ctx: Context, pages: int = 1, *, label: str = "region", prot: int | None = None,
            shared: bool = False, fd: int = -1, align: int | None = None) -> Region:
    """Map `pages` pages (anonymous private by default; MAP_SHARED, or the
    file `fd`, on request), aligned to `align` bytes, between guards."""
    lib, size = ctx.lib, ctx.page_size
    prot = lib.PROT_READ | lib.PROT_WRITE if prot is None else prot
    length = pages * size
    align = align or size
    span = length + align + 2 * size
    reserve = _check(lib.uabi_mmap(0, span, lib.PROT_NONE,
                                   lib.MAP_PRIVATE | lib.MAP_ANONYMOUS | lib.MAP_NORESERVE, -1, 0),
                     "mmap reservation")
    start = _align_up(reserve + size, align)
    flags = (lib.MAP_SHARED if shared else lib.MAP_PRIVATE) | lib.MAP_FIXED
    if fd < 0:
        flags |= lib.MAP_ANONYMOUS
    _check(lib.uabi_mmap(start, length, prot, flags, fd, 0), f"mmap {label}")
    return Region(start, length, prot, label, size)


def unmapped(ctx: Context, pages: int = 1) -> int:
    """An address with no mapping for `pages` pages (a hole between guards)."""
    region = mapping(ctx, pages, label="hole", prot=ctx.lib.PROT_NONE)
    _check(ctx.lib.uabi_munmap(region.addr, region.length), "munmap")
    return region.addr


def pattern(region: Region, index: int, token: bytes) -> bytes:
    """Contents of one page that no other page of the run shares."""
    head = f"{region.label}[{index}] {token.hex()} ".encode()
    return (head * (region.page_size // len(head) + 1))[:region.page_size]


def fill(ctx: Context, region: Region, pages: Iterable[int] | None = None, *,
         token: bytes | None = None) -> None:
    """Write a distinct pattern into the given pages (all by default), which
    makes them present; never call it on holes of a registered range."""
    token = token if token is not None else os.urandom(8)
    for i in range(region.pages) if pages is None else pages:
        write(ctx, region.page(i), pattern(region, i, token))


def write(ctx: Context, addr: int, data: bytes) -> None:
    ctx.ffi.memmove(ctx.ffi.cast("char *", addr), data, len(data))


def read(ctx: Context, addr: int, length: int) -> bytes:
    return bytes(ctx.ffi.buffer(ctx.ffi.cast("char *", addr), length))


def pagemap(addr: int, pages: int, page_size: int) -> list[int]:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8 * pages, addr // page_size * 8)
    finally:
        os.close(fd)
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]


def kpageflags(pfn: int) -> int | None:
    """Flags of a physical page; None where /proc/kpageflags is not readable."""
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.pread(fd, 8, pfn * 8)
    finally:
        os.close(fd)
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def page_flags(addr: int, page_size: int) -> int | None:
    """kpageflags of the page mapped at addr; None for no page or no access."""
    entry = pagemap(addr, 1, page_size)[0]
    if not entry & PM_PRESENT or not entry & PM_FRAME_MASK:
        return None
    return kpageflags(entry & PM_FRAME_MASK)


def ksm_merged(addr: int, page_size: int) -> bool:
    """Whether the page at addr is a KSM page: its kpageflags where they can
    be read, else whether /proc/self/ksm_stat counts any merged page."""
    flags = page_flags(addr, page_size)
    if flags is not None:
        return bool(flags & KPF_KSM)
    try:
        with open("/proc/self/ksm_stat") as f:
            for line in f:
                if line.startswith("ksm_merging_pages "):
                    return int(line.split()[1]) > 0
    except OSError:
        pass
    return False


def snapshot(ctx: Context, *regions: Region) -> Snapshot:
    """Per page of every region: present/swapped bits, frame, content hash."""
    out: Snapshot = {}
    for region in regions:
        entries = pagemap(region.addr, region.pages, region.page_size)
        for i, entry in enumerate(entries):
            addr = region.page(i)
            present = bool(entry & PM_PRESENT)
            digest = None
            if present and region.prot & ctx.lib.PROT_READ:
                digest = hashlib.blake2b(read(ctx, addr, region.page_size), digest_size=16).digest()
            out[addr] = PageState(present, bool(entry & PM_SWAP), entry & PM_FRAME_MASK, digest,
                                  bool(entry & PM_UFFD_WP))
    return out


def _moved(before: Snapshot, after: Snapshot, d: int, s: int) -> bool:
    """Page s of src went to d: dst has what src had (the same frame when
    frames are visible), src is left unmapped; a hole stays a hole."""
    old, new_dst, new_src = before[s], after[d], after[s]
    if not before[d].hole:
        return False
    if old.hole:
        return new_dst.hole and new_src.hole
    if not new_src.hole:
        return False
    if old.present:
        return new_dst.present and new_dst.digest == old.digest and \
            (not old.frame or new_dst.frame == old.frame)
    return new_dst.swapped and not new_dst.present and new_dst.frame == old.frame


def classify(ctx: Context, before: Snapshot, after: Snapshot, dst: int, src: int, length: int,
             moved: int | None = None) -> str:
    """The spec's word for what happened to the snapshotted memory, given
    the call's dst, src and len and the value left in `move`."""
    if before.keys() == after.keys() and all(before[a].same(after[a]) for a in before):
        return "unchanged"
    size = ctx.page_size
    pages = length // size if length % size == 0 else 0
    pairs = [(dst + k * size, src + k * size) for k in range(pages)]
    if pages and all(d in before and s in before for d, s in pairs) and dst != src:
        def outcome(done: int) -> bool:
            touched = {a for d, s in pairs[:done] for a in (d, s)}
            return all(_moved(before, after, d, s) for d, s in pairs[:done]) and \
                all(before[a].same(after[a]) for a in before if a not in touched)
        # A count short of len names the prefix it moved: prefer that reading
        # (the pages after it may be holes that a whole "moved" also fits).
        if moved is not None and 0 < moved < length and moved % size == 0 and outcome(moved // size):
            return "moved-prefix"
        if outcome(pages):
            return "moved"
    return describe_change(ctx, before, after, dst, src, length)


def describe_change(ctx: Context, before: Snapshot, after: Snapshot, dst: int, src: int,
                    length: int) -> str:
    def name(addr: int) -> str:
        for base, label in ((dst, "dst"), (src, "src")):
            if base <= addr < base + max(length, ctx.page_size):
                return f"{label}[{(addr - base) // ctx.page_size}]"
        return hex(addr)

    def origin(state: PageState) -> str:
        if state.present and state.digest is not None:
            for addr, old in before.items():
                if old.digest == state.digest:
                    return f"{state.describe()} (was {name(addr)})"
        return state.describe()

    changes = [f"{name(a)}: {before[a].describe()} -> {origin(after[a])}"
               for a in sorted(before) if a in after and not before[a].same(after[a])]
    shown = "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "")
    return f"changed: {shown}" if changes else "changed: mappings differ"


def madvise(ctx: Context, addr: int, length: int, advice: int) -> None:
    _check(ctx.lib.uabi_madvise(addr, length, advice), f"madvise({advice})")


def mprotect(ctx: Context, addr: int, length: int, prot: int) -> None:
    _check(ctx.lib.uabi_mprotect(addr, length, prot), "mprotect")


def mlock(ctx: Context, region: Region) -> None:
    _check(ctx.lib.uabi_mlock(region.addr, region.length), "mlock")


def thp_size() -> int | None:
    try:
        with open(THP_SIZE_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def smaps_field(addr: int, name: str) -> int | None:
    """A field of /proc/self/smaps, in bytes, for the VMA containing addr."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if head:
                inside = int(head.group(1), 16) <= addr < int(head.group(2), 16)
            elif inside and line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return None


def huge_state(region: Region) -> str:
    """kept: the region is mapped by huge pages (AnonHugePages covers it);
    split: no huge mapping is left; anything between is described."""
    huge = smaps_field(region.addr, "AnonHugePages") or 0
    if huge >= region.length:
        return "kept"
    if huge == 0:
        return "split"
    return f"partly huge: {huge // 1024} kB of {region.length // 1024} kB"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
