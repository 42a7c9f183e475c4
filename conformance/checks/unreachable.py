"""Errors the spec documents but user space cannot see."""

from __future__ import annotations

import os
import socket

from ..context import Context
from ..memory import mapping
from ..observation import Observation
from ..registry import Skip, check
from ..uffd import Pair, Uffd, in_heir, make_pair, observe_move


@check("move.errno.ESRCH")
def owner_exited(ctx: Context) -> Observation:
    """The owner of a userfaultfd sends it over a unix socket (SCM_RIGHTS)
    and exits; the receiver, whose own pair is observed, asks for a move."""
    mine = make_pair(ctx, 1)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            with Uffd.open(ctx) as owned:
                owned.register(mapping(ctx, 1, label="owner-dst"))
                socket.send_fds(theirs, [b"u"], [owned.fd])
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    try:
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    finally:
        ours.close()
        _, status = os.waitpid(pid, 0)
    if not fds:
        raise RuntimeError(f"the owner sent no userfaultfd (exit status {status:#x})")
    with Uffd(ctx, fds[0]) as received:
        obs = observe_move(received, mine.dst.addr, mine.src.addr, mine.src.length,
                           regions=(mine.dst, mine.src))
    obs.notes.append("the owner had exited and been reaped before the call")
    return obs


@check("move.errno.ESRCH")
def owner_exited_inherited(ctx: Context) -> Observation:
    """The owner forks and exits; its child, which inherited the
    userfaultfd and copies of the owner's mappings, asks for the move once
    the owner's address space is gone."""
    def owner() -> Pair:
        return make_pair(ctx, 1)

    def heir(pair: Pair) -> Observation:
        obs = pair.move()
        obs.notes.append("the owner had exited before the call")
        return obs

    return in_heir(owner, heir)


def _unobservable(ctx: Context, behaviour: str) -> Observation:
    raise Skip(ctx.spec.behaviour(behaviour).unobservable or "unobservable from user space")


@check("move.errno.ENOMEM")
def enomem(ctx: Context) -> Observation:
    return _unobservable(ctx, "move.errno.ENOMEM")


@check("move.errno.EINTR")
def eintr(ctx: Context) -> Observation:
    return _unobservable(ctx, "move.errno.EINTR")
