"""EAGAIN: some pages moved, or the address space is changing."""

from __future__ import annotations

import select
import threading

from ..context import Context
from ..memory import fill, mapping
from ..observation import Observation
from ..registry import check
from ..uffd import make_pair


@check("move.errno.EAGAIN.partial")
def partial_src_hole(ctx: Context) -> Observation:
    """Two pages move, then the third is a hole in src."""
    return make_pair(ctx, 3, src_pages=(0, 1)).move()


@check("move.errno.EAGAIN.partial")
def partial_dst_populated(ctx: Context) -> Observation:
    """Two pages move, then the third is already mapped in dst."""
    return make_pair(ctx, 3, dst_pages=(2,)).move()


@check("move.errno.EAGAIN.mmap-changing")
def mmap_changing(ctx: Context) -> Observation:
    """MADV_DONTNEED on a registered range raises UFFD_EVENT_REMOVE; the
    thread that called it waits until the event is read, and meanwhile the
    move is attempted."""
    lib = ctx.lib
    pair = make_pair(ctx, 1, features=lib.UFFD_FEATURE_EVENT_REMOVE)
    removed = mapping(ctx, 1, label="removed")
    fill(ctx, removed)
    pair.uffd.register(removed)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        lib.uabi_madvise(removed.addr, removed.length, lib.MADV_DONTNEED)), daemon=True)
    thread.start()
    if not select.select([pair.uffd.fd], [], [], 5.0)[0]:
        raise TimeoutError("no UFFD_EVENT_REMOVE became pending")
    obs = pair.move()
    msg = pair.uffd.read_msg(5.0)
    thread.join(5.0)
    event = None if msg is None else int(msg.event)
    obs.notes.append(f"pending event {event:#x}" if event is not None else "no event read")
    if event != lib.UFFD_EVENT_REMOVE:
        obs.notes.append("the pending event was not UFFD_EVENT_REMOVE")
    return obs
