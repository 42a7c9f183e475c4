"""EINVAL from the checks of the call and its argument: `move` is not written."""

from __future__ import annotations

from ..context import Context
from ..memory import fill, mapping
from ..observation import Observation
from ..registry import check
from ..uffd import Uffd, in_child, make_pair, observe, observe_move, open_fd

U64 = 1 << 64


@check("move.errno.EINVAL.before-api")
def before_api(ctx: Context) -> Observation:
    """No UFFDIO_API, so dst cannot even be registered: the first check
    must refuse the call anyway."""
    uffd = Uffd(ctx, open_fd(ctx))
    dst = mapping(ctx, 1, label="dst")
    src = mapping(ctx, 1, label="src")
    fill(ctx, src)
    return observe_move(uffd, dst.addr, src.addr, src.length, regions=(dst, src))


@check("move.errno.EINVAL.cross-mm")
def cross_mm_fork(ctx: Context) -> Observation:
    """A forked child, which inherited the userfaultfd, asks for the move;
    the memory observed is the parent's."""
    pair = make_pair(ctx, 1)

    def in_the_child() -> tuple[str | None, int]:
        arg = pair.uffd.move_arg(pair.dst.addr, pair.src.addr, pair.src.length)
        return pair.uffd.move(arg), int(arg.move)

    return observe(ctx, lambda: in_child(in_the_child), dst=pair.dst.addr, src=pair.src.addr,
                   length=pair.src.length, regions=(pair.dst, pair.src))


@check("move.errno.EINVAL.dst-unaligned")
def dst_unaligned(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    return pair.move(ctx.page_size, dst=pair.dst.addr + 8)


@check("move.errno.EINVAL.src-unaligned")
def src_unaligned(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    return pair.move(ctx.page_size, src=pair.src.addr + 8)


@check("move.errno.EINVAL.len-unaligned")
def len_unaligned(ctx: Context) -> Observation:
    return make_pair(ctx, 2).move(ctx.page_size + 100)


@check("move.errno.EINVAL.len-zero")
def len_zero(ctx: Context) -> Observation:
    return make_pair(ctx, 1).move(0)


@check("move.errno.EINVAL.range-wraps")
def range_wraps(ctx: Context) -> Observation:
    """dst + len wraps around to 0."""
    pair = make_pair(ctx, 1)
    return pair.move(U64 - pair.dst.addr)


@check("move.errno.EINVAL.range-wraps")
def range_past_user_space(ctx: Context) -> Observation:
    """dst is the last page of the 64-bit address space, far past user space."""
    pair = make_pair(ctx, 1)
    return pair.move(ctx.page_size, dst=U64 - ctx.page_size)


def _unknown_bits(ctx: Context) -> list[int]:
    mask = ctx.spec.flagset("mode").mask
    return [1 << bit for bit in range(64) if not mask & 1 << bit]


@check("move.errno.EINVAL.mode-unknown")
def mode_lowest_unknown_bit(ctx: Context) -> Observation:
    return make_pair(ctx, 1).move(mode=_unknown_bits(ctx)[0])


@check("move.errno.EINVAL.mode-unknown")
def mode_highest_bit(ctx: Context) -> Observation:
    return make_pair(ctx, 1).move(mode=_unknown_bits(ctx)[-1])
