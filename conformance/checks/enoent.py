"""ENOENT: nothing to move, or no mapping at all."""

from __future__ import annotations

from ..context import Context
from ..memory import fill, madvise, mapping, unmapped
from ..observation import Observation
from ..registry import check
from ..uffd import Pair, Uffd, make_pair


@check("move.errno.ENOENT.src-hole")
def src_hole(ctx: Context) -> Observation:
    """The first src page is a hole; the second is present, so the hole
    lies in an existing page table."""
    return make_pair(ctx, 2, src_pages=(1,), align=2 * ctx.page_size).move()


@check("move.errno.ENOENT.dst-no-vma")
def dst_no_vma(ctx: Context) -> Observation:
    pair = make_pair(ctx, 1)
    return pair.move(dst=unmapped(ctx))


@check("move.errno.ENOENT.src-no-vma")
def src_no_vma(ctx: Context) -> Observation:
    pair = make_pair(ctx, 1)
    return pair.move(src=unmapped(ctx))


@check("move.errno.ENOENT.src-no-page-table")
def src_no_page_table(ctx: Context) -> Observation:
    """src a whole, untouched page-table span (so no page table exists for
    it), dst page 0 mapped by a small page: MADV_NOHUGEPAGE, since a huge
    page at dst is found even before the missing page table (see
    move.errno.EEXIST.dst-huge), and THP "always" would give one."""
    span = ctx.page_size * (ctx.page_size // 8)  # what one page table maps on 64-bit
    uffd = Uffd.open(ctx)
    dst = mapping(ctx, span // ctx.page_size, label="dst", align=span)
    src = mapping(ctx, span // ctx.page_size, label="src", align=span)
    madvise(ctx, dst.addr, dst.length, ctx.lib.MADV_NOHUGEPAGE)
    fill(ctx, dst, (0,))
    uffd.register(dst)
    return Pair(uffd, dst, src).move(ctx.page_size)
