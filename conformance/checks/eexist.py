"""EEXIST: something is already mapped at dst."""

from __future__ import annotations

from ..context import Context
from ..memory import fill, mapping
from ..observation import Observation
from ..registry import check
from ..uffd import Uffd, make_pair, observe_move


@check("move.errno.EEXIST.dst-populated")
def dst_populated(ctx: Context) -> Observation:
    return make_pair(ctx, 2, dst_pages=(0,)).move()


@check("move.errno.EEXIST.dst-populated")
def overlap_present(ctx: Context) -> Observation:
    """A registered range moved onto itself, over present pages."""
    uffd = Uffd.open(ctx)
    region = mapping(ctx, 2, label="dst")
    fill(ctx, region)
    uffd.register(region)
    return observe_move(uffd, region.addr, region.addr, region.length, regions=(region,))


@check("move.errno.EEXIST.dst-marker", requires=("poison",))
def dst_poison_marker(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2, features=ctx.lib.UFFD_FEATURE_POISON)
    pair.uffd.poison(pair.dst.addr, ctx.page_size)
    return pair.move()


@check("move.errno.EEXIST.before-ENOENT")
def before_enoent(ctx: Context) -> Observation:
    """dst page 0 mapped, src page 0 a hole.  src page 1 is present and,
    both pages being in one aligned pair, in the same page table: without a
    page table at src the kernel reports ENOENT before it looks at dst."""
    pair = make_pair(ctx, 2, src_pages=(1,), dst_pages=(0,), align=2 * ctx.page_size)
    return pair.move(ctx.page_size)
