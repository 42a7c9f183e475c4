"""Who is woken: a thread blocked on a missing page in dst."""

from __future__ import annotations

from ..context import Context
from ..observation import Observation
from ..registry import check
from ..uffd import make_pair, move_under_faulter


@check("move.wake")
def wake(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    return move_under_faulter(ctx, pair, lambda: pair.move())


@check("move.mode.DONTWAKE")
def dontwake(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2)
    return move_under_faulter(ctx, pair, lambda: pair.move(mode=ctx.lib.UFFDIO_MOVE_MODE_DONTWAKE))
