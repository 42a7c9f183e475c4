"""The spec as an oracle, and the fuzzer that holds it against the kernel.

The predictions are checked on hand-built layouts against what the spec's
own behaviours expect (never against errno values typed here), and they
must follow the spec when it changes: a reordered step or a changed errno
changes the prediction.  The fuzzer runs a fixed-seed batch on this kernel
and must agree throughout; given a deliberately wrong copy of the spec it
must find the disagreement, shrink it to a small case, and print a C
program that compiles and, run, gives the kernel's answer again.
"""

from __future__ import annotations

import errno as errno_mod
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import spec
from conformance import oracle, reproducer
from conformance.fuzz import Finding, Fuzzer, Run
from conformance.layout import (
    ARENA_SPANS,
    ARG_MOVE_UNWRITABLE,
    COW,
    HOLE,
    NONE,
    OTHER_PROCESS,
    POISON,
    PRESENT,
    THP,
    ZERO,
    Addr,
    Arena,
    Call,
    Features,
    Geometry,
    Layout,
    Vma,
    normalized,
)
from conformance.oracle import Machine, OracleError, predict
from conformance.worker import Ready, Worker
from spec.model import Spec, Version

SPEC = spec.load()
SPEC_TEXT = spec.DEFAULT_SPEC.read_text()
GEO = Geometry(4096, 2 << 20, (1 << 47) - 4096)
ARENA = Arena(1 << 40, (1 << 40) + (ARENA_SPANS + 3) * GEO.pmd_size, (1 << 40) + GEO.pmd_size)
ALL = Features(thp=True, swap=True, wp_markers=True, poison=True, guard=True)
NEW = Machine(Version(6, 18), GEO)
HOLES = next(f.value for fs in SPEC.flags for f in fs.values if f.name == "UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES")


def expected(behaviour: str, version: Version = NEW.version, s: Spec = SPEC) -> tuple[str | None, str | None]:
    exp = s.behaviour(behaviour).expectation_for(version)
    assert exp is not None, f"{behaviour} has nothing for {version}"
    return exp.errno, exp.move


def case(*vmas: Vma, **kw: object) -> Layout:
    return normalized(Layout(tuple(vmas), **kw), GEO, ALL)  # type: ignore[arg-type]


def move(dst: tuple[int, int], src: tuple[int, int], pages: int = 1, **kw: object) -> Call:
    return Call(Addr(*dst), Addr(*src), pages, **kw)  # type: ignore[arg-type]


# A registered dst and an unregistered src, one page table span apart or in one span.
def pair(dst: tuple[str, ...], src: tuple[str, ...], *, src_far: bool = False) -> Layout:
    return case(Vma(dst), Vma(src, uffd=NONE, gap=1, boundary=src_far))


def edited(old: str, new: str) -> Spec:
    assert old in SPEC_TEXT, old
    return spec.loads(SPEC_TEXT.replace(old, new), "edited.yaml")


DST_PRESENT = "    - {condition: dst-present, stage: page, behaviour: move.errno.EEXIST.dst-populated}\n"
SRC_HOLE = ("    - {condition: src-hole, stage: page, behaviour: move.errno.ENOENT.src-hole, "
            "unless: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, otherwise: move.mode.ALLOW_SRC_HOLES}\n")
SWAPPED_STEPS = SPEC_TEXT.replace(DST_PRESENT + SRC_HOLE, SRC_HOLE + DST_PRESENT)


# --- predictions from the spec -------------------------------------------------------

def test_a_full_move_is_the_success_behaviour() -> None:
    layout = pair((HOLE, HOLE), (PRESENT, ZERO))
    p = predict(SPEC, NEW, layout, move((0, 0), (1, 0), 2), ARENA)
    errno, how = expected(SPEC.precedence_success or "")
    assert (p.errno, how) == (errno, "len") and p.move == 2 * GEO.page_size
    assert p.pages == ("B0", "zero", "hole", "hole")


def test_a_mapped_dst_page_beats_a_src_hole_under_a_page_table() -> None:
    """B1 is present, so a page table covers B0, a hole: dst is examined first."""
    p = predict(SPEC, NEW, pair((PRESENT,), (HOLE, PRESENT)), move((0, 0), (1, 0)), ARENA)
    assert p.decision.behaviour == "move.errno.EEXIST.dst-populated"
    assert p.errno == expected("move.errno.EEXIST.dst-populated")[0]
    assert p.move == -getattr(errno_mod, p.errno or "")


def test_no_page_table_at_src_beats_a_mapped_dst_page() -> None:
    p = predict(SPEC, NEW, pair((PRESENT,), (HOLE, HOLE), src_far=True), move((0, 0), (1, 0)), ARENA)
    assert p.decision.behaviour == "move.errno.ENOENT.src-no-page-table"
    assert p.errno == expected("move.errno.ENOENT.src-no-page-table")[0]


def test_allow_src_holes_moves_holes_and_passes_the_page_table_check() -> None:
    layout = pair((HOLE, HOLE), (HOLE, PRESENT), src_far=True)
    p = predict(SPEC, NEW, layout, move((0, 0), (1, 0), 2, mode=HOLES), ARENA)
    assert (p.errno, p.move) == (None, 2 * GEO.page_size)
    assert p.pages == ("hole", "B1", "hole", "hole")
    blocked = predict(SPEC, NEW, pair((PRESENT,), (HOLE,), src_far=True), move((0, 0), (1, 0), mode=HOLES), ARENA)
    assert blocked.decision.behaviour == "move.errno.EEXIST.dst-populated"


def test_a_failure_after_some_pages_is_the_partial_behaviour() -> None:
    layout = pair((HOLE, HOLE, HOLE), (PRESENT, PRESENT, COW))
    p = predict(SPEC, NEW, layout, move((0, 0), (1, 0), 3), ARENA)
    assert p.decision.behaviour == "move.errno.EAGAIN.partial"
    assert (p.errno, expected("move.errno.EAGAIN.partial")[1]) == (expected("move.errno.EAGAIN.partial")[0],
                                                                   "moved-bytes")
    assert p.move == p.moved == 2 * GEO.page_size
    assert p.pages == ("B0", "B1", "hole", "hole", "hole", "B2")


def test_overlapping_ranges_shift_pages_down_one_by_one() -> None:
    """dst one page below src in one mapping: each page moves into the
    hole the previous move left."""
    layout = case(Vma((HOLE, PRESENT, PRESENT, PRESENT)))
    p = predict(SPEC, NEW, layout, move((0, 0), (0, 1), 3), ARENA)
    assert p.errno is None and p.pages == ("A1", "A2", "A3", "hole")
    up = predict(SPEC, NEW, case(Vma((PRESENT, PRESENT, HOLE))), move((0, 1), (0, 0), 2), ARENA)
    assert up.decision.behaviour == "move.errno.EEXIST.dst-populated"


def test_a_huge_page_at_dst_beats_no_page_table_at_src() -> None:
    layout = case(Vma((THP,) * GEO.pmd_pages, huge=True), Vma((HOLE,), uffd=NONE, boundary=True))
    p = predict(SPEC, NEW, layout, move((0, 0), (1, 0)), ARENA)
    assert p.decision.step is not None and p.decision.step.condition == "dst-huge"
    assert p.errno == expected(p.decision.behaviour)[0]


def test_the_expectation_follows_the_kernel_version() -> None:
    layout = case(Vma((HOLE,)))
    call = Call(Addr(0, 0), Addr(0, 0, 0, "null"))
    for version in (Version(6, 8), Version(6, 18)):
        p = predict(SPEC, Machine(version, GEO), layout, call, ARENA)
        assert p.errno == expected("move.errno.ENOENT.src-no-vma", version)[0]
    old = SPEC.behaviour("move.errno.ENOENT.src-no-vma").expectation_for(Version(6, 8))
    new = SPEC.behaviour("move.errno.ENOENT.src-no-vma").expectation_for(Version(6, 18))
    assert old is not None and new is not None and old.errno != new.errno  # the test means something


def test_move_unwritable_applies_only_where_move_is_written() -> None:
    """A pending event writes -EAGAIN into move since 6.15 (the spec leaves
    it open before); an argument whose move cannot be written turns that
    into the move-unwritable behaviour where move is written, and allows
    both where the spec does not say."""
    layout = case(Vma((HOLE,)), Vma((PRESENT,), uffd=NONE, gap=1), pending_event=True)
    call = move((0, 0), (1, 0), arg=ARG_MOVE_UNWRITABLE)
    unwritable = expected("move.errno.EFAULT.move-unwritable")[0]
    seen = set()
    for version in (Version(6, 14), Version(6, 15)):
        changing = SPEC.behaviour("move.errno.EAGAIN.mmap-changing").expectation_for(version)
        assert changing is not None
        p = predict(SPEC, Machine(version, GEO), layout, call, ARENA)
        if changing.move in oracle.WRITTEN:
            seen.add("written")
            assert p.decision.behaviour == "move.errno.EFAULT.move-unwritable" and not p.alternatives
        else:
            seen.add("open" if changing.move is None else "untouched")
            assert p.decision.behaviour == "move.errno.EAGAIN.mmap-changing"
            assert p.allows(unwritable) == (changing.move is None), version
    assert "written" in seen and len(seen) == 2


def test_reordering_the_spec_reorders_the_prediction() -> None:
    swapped = spec.loads(SWAPPED_STEPS, "swapped.yaml")
    layout = pair((PRESENT,), (HOLE, PRESENT))
    call = move((0, 0), (1, 0))
    assert predict(SPEC, NEW, layout, call, ARENA).decision.behaviour == "move.errno.EEXIST.dst-populated"
    assert predict(swapped, NEW, layout, call, ARENA).decision.behaviour == "move.errno.ENOENT.src-hole"


# dst-unregistered made to give EPERM up to a far future kernel (EINVAL after,
# so the spec's EINVAL entry still names a behaviour that expects it).
DST_UNREGISTERED = ('    expect:\n      - {since: "6.8", errno: EINVAL, move: -errno, memory: unchanged}\n'
                    '  - id: move.errno.EINVAL.dst-other-uffd')
CHANGED_ERRNO = SPEC_TEXT.replace(DST_UNREGISTERED, DST_UNREGISTERED.replace(
    '      - {since: "6.8", errno: EINVAL,',
    '      - {since: "6.8", until: "6.99", errno: EPERM, move: -errno, memory: unchanged}\n'
    '      - {since: "6.99", errno: EINVAL,'))


def test_changing_an_errno_in_the_spec_changes_the_prediction() -> None:
    assert DST_UNREGISTERED in SPEC_TEXT and CHANGED_ERRNO != SPEC_TEXT
    changed = spec.loads(CHANGED_ERRNO, "changed.yaml")
    layout, call = case(Vma((HOLE,), uffd=NONE), Vma((PRESENT,), uffd=NONE, gap=1)), move((0, 0), (1, 0))
    before, after = (predict(s, NEW, layout, call, ARENA) for s in (SPEC, changed))
    assert before.errno == expected("move.errno.EINVAL.dst-unregistered")[0]
    assert after.errno == expected("move.errno.EINVAL.dst-unregistered", s=changed)[0] != before.errno
    assert after.move == -getattr(errno_mod, after.errno or "")


def test_a_condition_the_oracle_does_not_know_is_an_error() -> None:
    unknown = edited("condition: src-marker,", "condition: src-gremlin,")
    with pytest.raises(OracleError, match="src-gremlin"):
        predict(unknown, NEW, pair((HOLE,), (PRESENT,)), move((0, 0), (1, 0)), ARENA)


def test_layouts_never_put_mergeable_mappings_side_by_side() -> None:
    layout = case(Vma((PRESENT,)), Vma((PRESENT,)), Vma((POISON,), uffd=NONE))
    assert [v.gap for v in layout.vmas] == [0, 1, 0]
    assert layout.vmas[2].pages == (HOLE,)  # no marker without a userfaultfd to install it


# --- the kernel ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def worker() -> Iterator[tuple[Worker, Ready]]:
    w = Worker(spec.DEFAULT_SPEC)
    try:
        ready = w.start()
    except (OSError, EOFError, TimeoutError) as exc:
        pytest.skip(f"no worker: {exc}")
    if not ready.probes.get("move", "").startswith("ok"):
        w.stop()
        pytest.skip(f"no UFFDIO_MOVE: {ready.probes.get('move')}")
    yield w, ready
    w.stop()


def test_a_fixed_seed_batch_agrees_with_this_kernel(worker: tuple[Worker, Ready]) -> None:
    w, ready = worker
    run = Fuzzer(SPEC, w, ready).explore(300, seed=1)
    assert run.cases == 300
    assert not run.findings, [f.signature for f in run.findings.values()]
    assert sum(run.unrealized.values()) < run.cases // 10, run.unrealized
    stages = {what.split("/")[0] for what in run.decided}
    assert {"call", "range", "vma", "page", "success"} <= stages, run.decided


def test_hand_built_cases_agree_with_this_kernel(worker: tuple[Worker, Ready]) -> None:
    """The predictions above, made on the kernel (where it can build them)."""
    w, ready = worker
    fuzzer = Fuzzer(SPEC, w, ready)
    feats = ready.features
    cases = [
        (pair((HOLE, HOLE, HOLE), (PRESENT, PRESENT, COW)), move((0, 0), (1, 0), 3)),
        (pair((PRESENT,), (HOLE, HOLE), src_far=True), move((0, 0), (1, 0))),
        (pair((HOLE, HOLE), (HOLE, PRESENT), src_far=True), move((0, 0), (1, 0), 2, mode=HOLES)),
        (case(Vma((HOLE, PRESENT, PRESENT, PRESENT))), move((0, 0), (0, 1), 3)),
        (case(Vma((HOLE,)), Vma((PRESENT,), uffd=NONE, gap=1), pending_event=True),
         move((0, 0), (1, 0), arg=ARG_MOVE_UNWRITABLE)),
        (case(Vma((HOLE,)), Vma((PRESENT,), uffd=NONE, gap=1)), move((0, 0), (1, 0), caller=OTHER_PROCESS)),
    ]
    for layout, call in cases:
        layout = normalized(layout, ready.machine.geometry, feats)
        verdict = fuzzer.judge(layout, call)
        assert verdict.observed.unrealized is None, verdict.observed.unrealized
        assert not verdict.differences, (layout, call, verdict)


def _mutant_finding(tmp_path: Path, text: str, worker: tuple[Worker, Ready]) -> tuple[Spec, Finding, Run]:
    w, ready = worker
    path = tmp_path / "mutant.yaml"
    path.write_text(text)
    mutant = spec.load(path)
    run = Fuzzer(mutant, w, ready).explore(400, seed=3)
    assert run.findings, "the fuzzer missed a wrong rule"
    return mutant, next(iter(run.findings.values())), run


def _compile_and_run(tmp_path: Path, source: str) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    c, exe = tmp_path / "repro.c", tmp_path / "repro"
    c.write_text(source)
    built = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(c), "-lpthread"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


@pytest.mark.parametrize("mutation", ["swapped-steps", "changed-errno"])
def test_a_wrong_rule_is_found_shrunk_and_reproduced_in_c(mutation: str, tmp_path: Path,
                                                          worker: tuple[Worker, Ready]) -> None:
    _, ready = worker
    text = SWAPPED_STEPS if mutation == "swapped-steps" else CHANGED_ERRNO
    assert text != SPEC_TEXT
    mutant, finding, _ = _mutant_finding(tmp_path, text, worker)

    # the disagreement is the mutation's: the real spec predicts what the kernel did
    truth = predict(SPEC, ready.machine, finding.layout, finding.call, ready.arena)
    observed = finding.verdict.observed
    assert (truth.errno, truth.pages) == (observed.errno, observed.pages)
    assert (finding.verdict.prediction.errno, finding.verdict.prediction.pages) != (observed.errno, observed.pages)

    # shrunk: a couple of small mappings and a short call
    small = [v for v in finding.layout.vmas if not v.huge]
    assert len(finding.layout.vmas) <= 2 and len(small) == len(finding.layout.vmas), finding.layout
    assert sum(len(v.pages) for v in small) <= 6 and finding.call.pages <= 3, (finding.layout, finding.call)

    source = reproducer.program(mutant, ready.machine.geometry, ready.arena, finding.layout, finding.call,
                                finding.verdict.prediction, observed, os.uname().release)
    errno, moved, pages = reproducer.parse_output(_compile_and_run(tmp_path, source))
    assert (errno, moved) == (observed.errno, observed.move)
    assert tuple(pages[label] for label in finding.layout.labels()) == observed.pages


def test_the_c_program_rebuilds_every_kind_of_page(tmp_path: Path, worker: tuple[Worker, Ready]) -> None:
    """Markers, a shared page, a zero page, a pending event, a call from
    another process: the program's answer is the fuzzer's observation."""
    w, ready = worker
    geo, feats = ready.machine.geometry, ready.features
    layout = normalized(Layout((Vma((ZERO, COW, PRESENT, "wp-marker", POISON, "guard"), uffd="other"),
                                Vma((HOLE,) * 6, gap=2, unmapped=True))), geo, feats)
    call = move((1, 0), (0, 0), 6)
    observed = w.run(layout, call)
    assert observed.unrealized is None, observed.unrealized
    source = reproducer.program(SPEC, geo, ready.arena, layout, call, observed=observed)
    errno, moved, pages = reproducer.parse_output(_compile_and_run(tmp_path, source))
    assert (errno, moved, tuple(pages[x] for x in layout.labels())) == \
        (observed.errno, observed.move, observed.pages)
    other = replace(call, caller=OTHER_PROCESS)
    observed = w.run(layout, other)
    source = reproducer.program(SPEC, geo, ready.arena, layout, other, observed=observed)
    errno, moved, _ = reproducer.parse_output(_compile_and_run(tmp_path, source))
    assert (errno, moved) == (observed.errno, observed.move)
