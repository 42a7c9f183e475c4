"""A swapped-out page moves as a swap entry."""

from __future__ import annotations

import hashlib

from ..context import Context
from ..memory import PM_PRESENT, PM_SWAP, madvise, pagemap, read, snapshot, wait_until
from ..observation import Observation
from ..registry import Skip, check
from ..uffd import make_pair

PAGEOUT_WAIT = 5.0


@check("move.swap", timeout=30.0)
def swapped_out(ctx: Context) -> Observation:
    """MADV_PAGEOUT src until pagemap shows swap entries, move, then see
    whether dst holds swap entries (kept) or pages (read back), and only
    then read dst to compare with what src held."""
    pair = make_pair(ctx, 2)
    size = ctx.page_size
    contents = snapshot(ctx, pair.src)

    def swapped() -> bool:
        return all(e & PM_SWAP and not e & PM_PRESENT
                   for e in pagemap(pair.src.addr, pair.src.pages, size))

    madvise(ctx, pair.src.addr, pair.src.length, ctx.lib.MADV_PAGEOUT)
    if not wait_until(swapped, PAGEOUT_WAIT):
        raise Skip("MADV_PAGEOUT did not swap the pages out")
    obs = pair.move()
    entries = pagemap(pair.dst.addr, pair.dst.pages, size)
    if all(e & PM_SWAP and not e & PM_PRESENT for e in entries):
        obs.swap = "kept"
    elif all(e & PM_PRESENT for e in entries):
        obs.swap = "read-back"
    else:
        obs.swap = f"dst pagemap entries {[hex(e >> 55) for e in entries]}"
    if obs.errno is None:
        for i in range(pair.dst.pages):
            digest = hashlib.blake2b(read(ctx, pair.dst.page(i), size), digest_size=16).digest()
            if digest != contents[pair.src.page(i)].digest:
                obs.memory = f"dst[{i}] read back with other contents than src[{i}] had"
    return obs
