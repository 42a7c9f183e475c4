"""EINVAL from the checks of the two mappings: `move` holds -EINVAL."""

from __future__ import annotations

import os
from dataclasses import replace

from .. import memory
from ..context import Context
from ..memory import fill, mapping
from ..observation import Observation
from ..registry import check
from ..uffd import Pair, Uffd, make_pair


def _pair(ctx: Context, dst: memory.Region, src: memory.Region, uffd: Uffd | None = None,
          register: bool = True) -> Pair:
    """A Pair from given mappings: src filled, dst registered (by default)."""
    uffd = uffd or Uffd.open(ctx)
    fill(ctx, src)
    if register:
        uffd.register(dst)
    return Pair(uffd, dst, src)


@check("move.errno.EINVAL.src-shared")
def src_shared(ctx: Context) -> Observation:
    return _pair(ctx, mapping(ctx, 1, label="dst"), mapping(ctx, 1, label="src", shared=True)).move()


@check("move.errno.EINVAL.dst-shared")
def dst_shared(ctx: Context) -> Observation:
    pair = _pair(ctx, mapping(ctx, 1, label="dst", shared=True), mapping(ctx, 1, label="src"))
    return pair.move()


@check("move.errno.EINVAL.src-past-vma")
def src_past_vma(ctx: Context) -> Observation:
    """src's mapping has one page, the move two."""
    pair = _pair(ctx, mapping(ctx, 2, label="dst"), mapping(ctx, 1, label="src"))
    return pair.move(2 * ctx.page_size)


@check("move.errno.EINVAL.dst-past-vma")
def dst_past_vma(ctx: Context) -> Observation:
    """dst's mapping has one page, the move two."""
    pair = _pair(ctx, mapping(ctx, 1, label="dst"), mapping(ctx, 2, label="src"))
    return pair.move(2 * ctx.page_size)


@check("move.errno.EINVAL.prot-differs")
def prot_differs(ctx: Context) -> Observation:
    """Both writable; src also executable."""
    lib = ctx.lib
    src = mapping(ctx, 1, label="src", prot=lib.PROT_READ | lib.PROT_WRITE | lib.PROT_EXEC)
    return _pair(ctx, mapping(ctx, 1, label="dst"), src).move()


@check("move.errno.EINVAL.mlock-differs")
def mlock_differs(ctx: Context) -> Observation:
    pair = _pair(ctx, mapping(ctx, 1, label="dst"), mapping(ctx, 1, label="src"))
    memory.mlock(ctx, pair.src)
    return pair.move()


@check("move.errno.EINVAL.read-only")
def read_only(ctx: Context) -> Observation:
    """Both mappings read-only (src filled before it was made so)."""
    lib = ctx.lib
    dst = mapping(ctx, 1, label="dst", prot=lib.PROT_READ)
    src = mapping(ctx, 1, label="src")
    fill(ctx, src)
    memory.mprotect(ctx, src.addr, src.length, lib.PROT_READ)
    src = replace(src, prot=lib.PROT_READ)
    uffd = Uffd.open(ctx)
    uffd.register(dst)
    return Pair(uffd, dst, src).move()


@check("move.errno.EINVAL.dst-unregistered")
def dst_unregistered(ctx: Context) -> Observation:
    return _pair(ctx, mapping(ctx, 1, label="dst"), mapping(ctx, 1, label="src"), register=False).move()


@check("move.errno.EINVAL.dst-other-uffd")
def dst_other_uffd(ctx: Context) -> Observation:
    """dst registered with a second userfaultfd of the same process."""
    other = make_pair(ctx, 1)
    caller = Uffd.open(ctx)
    return Pair(caller, other.dst, other.src).move()


@check("move.errno.EINVAL.src-not-anonymous")
def src_memfd_private(ctx: Context) -> Observation:
    """src maps a memfd MAP_PRIVATE; writing it made private copies."""
    fd = os.memfd_create("uffd-uabi-src", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, ctx.page_size)
        src = mapping(ctx, 1, label="src", fd=fd)
    finally:
        os.close(fd)
    return _pair(ctx, mapping(ctx, 1, label="dst"), src).move()
