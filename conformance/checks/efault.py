"""EFAULT: an argument the kernel cannot read or write, a marker in src."""

from __future__ import annotations

from ..context import Context
from ..memory import MADV_GUARD_INSTALL, madvise, mapping, mprotect, snapshot
from ..observation import Observation
from ..registry import check
from ..uffd import Pair, make_pair, move_under_faulter, observe, observe_move


def _move_marker(pair: Pair) -> Observation:
    """Move src, noting what pagemap showed there before (a marker shows as
    a swap entry; uffd-wp ones carry the uffd-wp bit)."""
    state = snapshot(pair.ctx, pair.src)[pair.src.addr]
    obs = pair.move()
    obs.notes.append(f"src before the move: {state.describe()}{' uffd-wp' if state.uffd_wp else ''}")
    return obs


@check("move.errno.EFAULT.arg")
def arg_unreadable(ctx: Context) -> Observation:
    """A complete argument, on a page then made PROT_NONE; it is made
    readable again after the call to see whether `move` was written."""
    lib = ctx.lib
    pair = make_pair(ctx, 1)
    page = mapping(ctx, 1, label="arg")
    arg = pair.uffd.move_arg(pair.dst.addr, pair.src.addr, pair.src.length, at=page.addr)

    def call() -> tuple[str | None, int]:
        mprotect(ctx, page.addr, page.length, lib.PROT_NONE)
        err = pair.uffd.move(page.addr)
        mprotect(ctx, page.addr, page.length, lib.PROT_READ)
        return err, int(arg.move)

    return observe(ctx, call, dst=pair.dst.addr, src=pair.src.addr, length=pair.src.length,
                   regions=(pair.dst, pair.src))


@check("move.errno.EFAULT.move-unwritable")
def move_unwritable(ctx: Context) -> Observation:
    """The fields before `move` end one page; `move` starts the next, read-only."""
    lib = ctx.lib
    pair = make_pair(ctx, 2)
    pages = mapping(ctx, 2, label="arg")
    at = pages.page(1) - ctx.spec.struct.field("move").offset
    arg = pair.uffd.move_arg(pair.dst.addr, pair.src.addr, pair.src.length, at=at)
    mprotect(ctx, pages.page(1), ctx.page_size, lib.PROT_READ)
    return move_under_faulter(ctx, pair, lambda: observe_move(
        pair.uffd, pair.dst.addr, pair.src.addr, pair.src.length, regions=(pair.dst, pair.src), arg=arg))


@check("move.errno.EFAULT.src-wp-marker", requires=("wp-unpopulated",))
def src_wp_marker(ctx: Context) -> Observation:
    """src registered for write-protect with the same userfaultfd, and
    write-protected while empty, so it holds uffd-wp markers."""
    lib = ctx.lib
    pair = make_pair(ctx, 1, src_pages=(), features=lib.UFFD_FEATURE_WP_UNPOPULATED)
    pair.uffd.register(pair.src, lib.UFFDIO_REGISTER_MODE_WP)
    pair.uffd.writeprotect(pair.src.addr, pair.src.length)
    return _move_marker(pair)


@check("move.errno.EFAULT.src-poison-marker", requires=("poison",))
def src_poison_marker(ctx: Context) -> Observation:
    """src registered with the same userfaultfd and poisoned while empty."""
    pair = make_pair(ctx, 1, src_pages=(), features=ctx.lib.UFFD_FEATURE_POISON)
    pair.uffd.register(pair.src)
    pair.uffd.poison(pair.src.addr, pair.src.length)
    return _move_marker(pair)


@check("move.errno.EFAULT.src-guard", requires=("guard-regions",))
def src_guard_region(ctx: Context) -> Observation:
    pair = make_pair(ctx, 1, src_pages=())
    madvise(ctx, pair.src.addr, pair.src.length, MADV_GUARD_INSTALL)
    return _move_marker(pair)

