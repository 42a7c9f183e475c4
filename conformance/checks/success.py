"""Moves that succeed: the pages change owner."""

from __future__ import annotations

from .. import memory
from ..context import Context
from ..memory import PM_PRESENT, mapping, pagemap
from ..observation import Observation
from ..registry import check
from ..uffd import Uffd, child_alive, make_pair, observe_move


@check("move.success")
def success(ctx: Context) -> Observation:
    return make_pair(ctx, 4).move()


@check("move.move-output-only")
def move_output_only(ctx: Context) -> Observation:
    """`move` holds, on entry, what a resumed partial move would report."""
    pair = make_pair(ctx, 4)
    return pair.move(move_before=pair.src.length // 2)


@check("move.mode.ALLOW_SRC_HOLES")
def allow_src_holes(ctx: Context) -> Observation:
    pair = make_pair(ctx, 4, src_pages=(0, 2))
    return pair.move(mode=ctx.lib.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES)


@check("move.overlap")
def overlap_holes(ctx: Context) -> Observation:
    """A registered range moved onto itself, over holes."""
    uffd = Uffd.open(ctx)
    region = mapping(ctx, 2, label="dst")
    uffd.register(region)
    return observe_move(uffd, region.addr, region.addr, region.length,
                        ctx.lib.UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, regions=(region,))


@check("move.zero-page")
def zero_page(ctx: Context) -> Observation:
    """src pages read but never written map the shared zero page."""
    pair = make_pair(ctx, 2, src_pages=())
    for i in range(pair.src.pages):
        ctx.lib.uabi_touch_read(pair.src.page(i))
    mapped = [bool(e & PM_PRESENT) for e in pagemap(pair.src.addr, pair.src.pages, ctx.page_size)]
    obs = pair.move()
    obs.notes.append(f"src present after the read faults: {mapped}")
    return obs


@check("move.fork-dontfork")
def fork_dontfork(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    memory.madvise(ctx, pair.src.addr, pair.src.length, ctx.lib.MADV_DONTFORK)
    with child_alive():
        return pair.move()
