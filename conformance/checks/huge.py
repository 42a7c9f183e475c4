"""Transparent huge pages: moved whole, or split."""

from __future__ import annotations

from ..context import Context
from ..memory import Region, fill, huge_state, madvise, mapping, thp_size
from ..observation import Observation
from ..registry import Skip, check
from ..uffd import Pair, Uffd


def _huge_src(ctx: Context) -> Region:
    """A huge-page-aligned src of one huge page, MADV_HUGEPAGE, written."""
    size = thp_size()
    if not size:
        raise Skip("no transparent huge page size")
    src = mapping(ctx, size // ctx.page_size, label="src", align=size)
    madvise(ctx, src.addr, src.length, ctx.lib.MADV_HUGEPAGE)
    fill(ctx, src)
    if huge_state(src) != "kept":
        raise Skip("the kernel gave no huge page for src")
    return src


@check("move.thp.whole", timeout=20.0)
def thp_whole(ctx: Context) -> Observation:
    """The whole huge page, to a huge-page-aligned dst with no page table."""
    uffd = Uffd.open(ctx)
    src = _huge_src(ctx)
    dst = mapping(ctx, src.pages, label="dst", align=src.length)
    uffd.register(dst)
    obs = Pair(uffd, dst, src).move()
    obs.huge = huge_state(dst)
    return obs


@check("move.thp.split", timeout=20.0)
def thp_split(ctx: Context) -> Observation:
    """The first page of a huge page; huge is what became of src's."""
    uffd = Uffd.open(ctx)
    src = _huge_src(ctx)
    dst = mapping(ctx, 1, label="dst")
    uffd.register(dst)
    obs = Pair(uffd, dst, src).move(ctx.page_size)
    obs.huge = huge_state(src)
    return obs


@check("move.errno.EEXIST.dst-huge", timeout=20.0)
def dst_huge(ctx: Context) -> Observation:
    """dst page 0 in a huge page, src an untouched huge-page span with no
    page table: the huge dst is found first."""
    size = thp_size()
    if not size:
        raise Skip("no transparent huge page size")
    uffd = Uffd.open(ctx)
    dst = mapping(ctx, size // ctx.page_size, label="dst", align=size)
    madvise(ctx, dst.addr, dst.length, ctx.lib.MADV_HUGEPAGE)
    fill(ctx, dst, (0,))
    if huge_state(dst) != "kept":
        raise Skip("the kernel gave no huge page for dst")
    src = mapping(ctx, dst.pages, label="src", align=size)
    uffd.register(dst)
    return Pair(uffd, dst, src).move(ctx.page_size)
