"""EBUSY: a src page that is not the process's alone."""

from __future__ import annotations

import os

from ..context import Context
from ..memory import ksm_merged, madvise, pattern, read, wait_until, write
from ..observation import Observation
from ..registry import Skip, check
from ..uffd import Pair, child_alive, make_pair

KSM_WAIT = 30.0  # seconds ksmd gets to merge two identical pages


@check("move.errno.EBUSY.fork-cow")
def fork_cow(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    with child_alive():
        return pair.move()


def _after_child_exited(ctx: Context) -> Pair:
    """src pages that a fork shared with a child that has exited since."""
    pair = make_pair(ctx, 2)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pair


@check("move.errno.EBUSY.fork-child-exited")
def fork_child_exited(ctx: Context) -> Observation:
    return _after_child_exited(ctx).move()


@check("move.fork-rewritten")
def fork_rewritten(ctx: Context) -> Observation:
    """Each src page is written with what it holds, which takes the write
    fault that makes the page exclusive again."""
    pair = _after_child_exited(ctx)
    for i in range(pair.src.pages):
        write(ctx, pair.src.page(i), read(ctx, pair.src.page(i), 8))
    return pair.move()


@check("move.errno.EBUSY.ksm", timeout=KSM_WAIT + 15)
def ksm_page(ctx: Context) -> Observation:
    """Two src pages of the same contents, MADV_MERGEABLE, until ksmd has
    merged them."""
    pair = make_pair(ctx, 2, src_pages=())
    same = pattern(pair.src, 0, os.urandom(8))
    for i in range(pair.src.pages):
        write(ctx, pair.src.page(i), same)
    madvise(ctx, pair.src.addr, pair.src.length, ctx.lib.MADV_MERGEABLE)
    if not wait_until(lambda: ksm_merged(pair.src.addr, ctx.page_size), KSM_WAIT, 0.1):
        raise Skip(f"ksmd did not merge the pages within {KSM_WAIT:.0f} s")
    return pair.move(ctx.page_size)


@check("move.errno.EBUSY.pinned")
def io_uring_pinned(ctx: Context) -> Observation:
    """src page 0 registered as an io_uring fixed buffer (FOLL_PIN|FOLL_LONGTERM)."""
    pair = make_pair(ctx, 1)
    ring = ctx.lib.uabi_io_uring_pin(pair.src.addr, pair.src.length)
    if ring < 0:
        raise Skip(f"io_uring buffer registration failed: {os.strerror(-ring)}")
    try:
        return pair.move()
    finally:
        os.close(ring)
