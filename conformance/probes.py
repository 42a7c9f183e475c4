"""What this machine offers the checks, asked once before any check runs.

The names are the spec's `requires` vocabulary (plus "move", the ioctl
itself), so the harness can skip a check before forking it.  The probes
that touch memory or the kernel's optional parts run in a forked child: a
probe must never crash or hang the parent.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from . import memory
from .context import Context
from .system import swap_free
from .uffd import Uffd, in_child

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
KSM_RUN = "/sys/kernel/mm/ksm/run"


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


def api_features(ctx: Context) -> int:
    """The features UFFDIO_API reports for a handshake requesting none."""
    with Uffd.open(ctx) as uffd:
        return uffd.features


def _feature(ctx: Context, features: int | None, name: str, constant: str, what: str) -> Probe:
    if features is None:
        return Probe(name, False, "userfaultfd unavailable")
    bit = ctx.value(constant)
    if features & bit:
        return Probe(name, True, f"{constant} reported by UFFDIO_API")
    return Probe(name, False, f"{what} not supported: {constant} absent from UFFDIO_API features {features:#x}")


def _thp() -> Probe:
    try:
        with open(THP_ENABLED) as f:
            enabled = f.read().strip()
    except OSError:
        return Probe("thp", False, "no transparent huge pages in this kernel")
    size = memory.thp_size()
    if "[never]" in enabled or not size:
        return Probe("thp", False, f"transparent huge pages disabled: {enabled}")
    return Probe("thp", True, f"transparent huge pages {enabled}, {size // 1024} kB")


def _swap(ctx: Context) -> Probe:
    free = swap_free()
    if free > 0:
        return Probe("swap", True, f"{free // 1024} kB of swap free")
    if "swap" not in ctx.options:
        return Probe("swap", False, "no swap; opt in to let the runner make a swap file")
    missing = [tool for tool in ("mkswap", "swapon", "swapoff") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        return Probe("swap", False, "cannot make a swap file: " +
                     (f"{', '.join(missing)} not found" if missing else "not root"))
    return Probe("swap", True, "a temporary swap file is made for the run (opt-in)")


def _ksm(ctx: Context) -> Probe:
    if not os.path.exists(KSM_RUN):
        return Probe("ksm", False, "no KSM in this kernel")
    if "ksm" not in ctx.options:
        return Probe("ksm", False, "KSM not opted in (it changes /sys/kernel/mm/ksm)")
    if not os.access(KSM_RUN, os.W_OK):
        return Probe("ksm", False, "cannot start ksmd: /sys/kernel/mm/ksm/run not writable")
    return Probe("ksm", True, "ksmd runs for the run (opt-in)")


def _io_uring(ctx: Context) -> Probe:
    region = memory.mapping(ctx, 1, label="probe")
    memory.fill(ctx, region)
    fd = ctx.lib.uabi_io_uring_pin(region.addr, region.length)
    if fd < 0:
        return Probe("io_uring", False, f"cannot register an io_uring buffer: {os.strerror(-fd)}")
    os.close(fd)
    return Probe("io_uring", True, "io_uring fixed buffers can be registered")


def _guard_regions(ctx: Context) -> Probe:
    region = memory.mapping(ctx, 1, label="probe")
    ret = ctx.lib.uabi_madvise(region.addr, region.length, memory.MADV_GUARD_INSTALL)
    if ret < 0:
        return Probe("guard-regions", False, f"MADV_GUARD_INSTALL: {os.strerror(-ret)}")
    return Probe("guard-regions", True, "MADV_GUARD_INSTALL accepted")


def _probe_in_child(ctx: Context) -> dict[str, Probe]:
    try:
        features: int | None = api_features(ctx)
        detail = ""
    except OSError as exc:
        features, detail = None, f"userfaultfd unavailable: {exc}"
    out = {
        "move": _feature(ctx, features, "move", ctx.spec.feature.name, ctx.spec.ioctl.name),
        "wp-unpopulated": _feature(ctx, features, "wp-unpopulated", "UFFD_FEATURE_WP_UNPOPULATED",
                                   "write-protect markers on unpopulated pages"),
        "poison": _feature(ctx, features, "poison", "UFFD_FEATURE_POISON", "UFFDIO_POISON"),
        "io_uring": _io_uring(ctx),
        "guard-regions": _guard_regions(ctx),
    }
    if features is None:
        for name in ("move", "wp-unpopulated", "poison"):
            out[name] = Probe(name, False, detail)
    return out


def probe_all(ctx: Context) -> dict[str, Probe]:
    """Every probe, by name."""
    try:
        found: dict[str, Probe] = in_child(lambda: _probe_in_child(ctx), timeout=30.0)
    except (RuntimeError, TimeoutError, OSError) as exc:
        found = {name: Probe(name, False, f"probe failed: {exc}")
                 for name in ("move", "wp-unpopulated", "poison", "io_uring", "guard-regions")}
    found.update(thp=_thp(), swap=_swap(ctx), ksm=_ksm(ctx))
    return dict(sorted(found.items()))
