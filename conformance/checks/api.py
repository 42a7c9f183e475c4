"""The handshake and the registration: how a program learns UFFDIO_MOVE exists."""

from __future__ import annotations

from ..context import Context
from ..memory import mapping
from ..observation import Observation
from ..registry import check
from ..uffd import Uffd, make_pair, open_fd


def _present(mask: int, bit: int) -> str:
    return "present" if mask & bit else "absent"


@check("api.feature-bit")
def feature_bit(ctx: Context) -> Observation:
    """The bit in what a feature-less handshake reports; errno is that of a
    second handshake, on a new userfaultfd, that requests the feature."""
    feature = ctx.value(ctx.spec.feature.name)
    with Uffd.open(ctx) as plain:
        reported = plain.features
    with Uffd(ctx, open_fd(ctx)) as asking:
        err = asking.api(feature)
    return Observation(errno=err, feature=_present(reported, feature),
                       notes=[f"features reported: {reported:#x}"])


@check("api.feature-not-required")
def feature_not_required(ctx: Context) -> Observation:
    pair = make_pair(ctx, 2, features=0)
    obs = pair.move()
    obs.notes.append(f"UFFDIO_API requested no features; reported {pair.uffd.features:#x}")
    return obs


@check("register.ioctls-bit")
def register_ioctls_bit(ctx: Context) -> Observation:
    bit = ctx.spec.range_ioctl.value
    with Uffd.open(ctx) as uffd:
        ioctls = uffd.register(mapping(ctx, 1, label="dst"))
    return Observation(ioctl_bit=_present(ioctls, bit), notes=[f"ioctls: {ioctls:#x}"])
