"""The checks themselves, without the harness: they cover the spec, and
each one that this machine can run returns an Observation (or skips)."""

from __future__ import annotations

import errno

import pytest

import conformance.checks  # noqa: F401 - registers the checks
import spec
from conformance.context import make_context
from conformance.memory import PageState, classify, fill, madvise, mapping, read, snapshot, write
from conformance.observation import Observation
from conformance.probes import probe_all
from conformance.registry import REGISTRY, Check, Skip
from conformance.uffd import in_child

SPEC = spec.load()
IDS = {b.id for b in SPEC.behaviours}


def test_every_behaviour_has_a_check() -> None:
    covered = {i for c in REGISTRY for i in c.behaviours}
    assert sorted(IDS - covered) == []


@pytest.mark.parametrize("check", REGISTRY, ids=lambda c: c.name)
def test_every_check_names_real_behaviours(check: Check) -> None:
    assert check.behaviours and set(check.behaviours) <= IDS


@pytest.fixture(scope="module")
def machine() -> tuple[object, dict]:
    ctx = make_context(SPEC)
    probes = probe_all(ctx)
    if not probes["move"].ok:
        pytest.skip(probes["move"].detail)
    return ctx, probes


@pytest.mark.parametrize("check", REGISTRY, ids=lambda c: c.name)
def test_check_observes(check: Check, machine: tuple) -> None:
    """Run in a forked child as the harness does; no opt-ins are granted,
    so checks needing swap or KSM are left out by their probes."""
    ctx, probes = machine
    needs = set(check.requires) | {r for i in check.behaviours for r in SPEC.behaviour(i).requires}
    lacking = sorted(n for n in needs if not probes[n].ok)
    if lacking:
        pytest.skip(f"needs {', '.join(lacking)}")

    def run() -> Observation | str:
        try:
            return check.func(ctx)
        except Skip as exc:
            return f"skip: {exc}"

    result = in_child(run, timeout=check.timeout)
    if isinstance(result, str):
        pytest.skip(result)
    assert isinstance(result, Observation)
    assert result.errno is None or result.errno in errno.errorcode.values(), result.errno
    if result.move is not None:
        assert result.move_before is not None, "a check that reads move must say what it wrote there"


def _copy_instead_of_move(ctx: object) -> str:
    """What a kernel that copied the page (and freed src) would leave."""
    src = mapping(ctx, 2, label="src")
    dst = mapping(ctx, 2, label="dst")
    fill(ctx, src)
    before = snapshot(ctx, dst, src)
    if not before[src.addr].frame:
        return "no frames"
    write(ctx, dst.addr, read(ctx, src.addr, 2 * ctx.page_size))
    madvise(ctx, src.addr, src.length, ctx.lib.MADV_DONTNEED)
    return classify(ctx, before, snapshot(ctx, dst, src), dst.addr, src.addr, src.length)


def test_a_copy_is_not_a_move(machine: tuple) -> None:
    """Same contents at dst and src unmapped are not enough: the page
    itself must have changed owner (the same frame, where frames show)."""
    outcome = in_child(lambda: _copy_instead_of_move(machine[0]))
    if outcome == "no frames":
        pytest.skip("page frames are hidden from this user")
    assert outcome.startswith("changed:") and "(was src[0])" in outcome


def test_classify_names_what_happened(machine: tuple) -> None:
    ctx = machine[0]
    size = ctx.page_size
    page = {i: PageState(True, False, 100 + i, bytes([i])) for i in range(4)}
    hole = PageState(False, False, 0, None)
    dst, src = 0x10000, 0x20000
    before = {dst: hole, dst + size: hole, src: page[0], src + size: page[1]}
    moved = {dst: page[0], dst + size: page[1], src: hole, src + size: hole}
    prefix = {dst: page[0], dst + size: hole, src: hole, src + size: page[1]}
    kept = {dst: page[0], dst + size: hole, src: page[0], src + size: page[1]}
    assert classify(ctx, before, before, dst, src, 2 * size) == "unchanged"
    assert classify(ctx, before, moved, dst, src, 2 * size, 2 * size) == "moved"
    assert classify(ctx, before, prefix, dst, src, 2 * size, size) == "moved-prefix"
    assert classify(ctx, before, prefix, dst, src, 2 * size, 2 * size).startswith("changed:")
    assert classify(ctx, before, kept, dst, src, 2 * size, 2 * size).startswith("changed:")
