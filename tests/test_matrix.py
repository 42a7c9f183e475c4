"""The kernel matrix: choosing Debian's kernels, the table and the version
check on a real run, the HTML page, and one real boot.

tests/data/matrix/ holds what real runs produced on this kind of machine:
registry-images.tsv, the linux-image-*-amd64 packages tools/debian.py listed
in Debian's registry, and matrix.json, a `uffd-uabi matrix --debian all`
run (three of its lines could not be booted: the registry has their images
but no longer their modules).  The host-independent tests read them; the
expectations come from the spec model, and the version check is exercised
by changing one real cell at a time.

The boot test runs the real command on Debian's 6.1 (the cheapest kernel,
and one without UFFDIO_MOVE); it is skipped where QEMU, virtme-ng or the
registry is missing, and bounded by a 300 s timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import spec
from conformance import kernels, matrix, vm
from conformance.judge import Status
from conformance.matrix import Cell, Column
from spec.model import Version
from tools.debian import Package

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "matrix"
SPEC = spec.load()
CLI = [str(Path(sys.executable).parent / "uffd-uabi"), "matrix"]
BOOT_TIMEOUT = 300  # seconds for the whole boot test: download, host run, boot, checks


# --- the registry's real list ---------------------------------------------------------------

def registry() -> list[Package]:
    out = []
    for line in (DATA / "registry-images.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            suite, name, version = line.split("\t")
            out.append(Package(name, version, "amd64", suite, ""))
    return out


def dpkg_ge(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "ge", b]).returncode == 0


def test_major_lines_are_the_lines_with_a_generic_image() -> None:
    images = registry()
    lines = kernels.major_lines(images)
    # kernels.md: 6.1 in bookworm, 6.12 in trixie, 6.16 up to 7.3 in trixie-backports
    assert {"6.1", "6.12", "6.16", "6.19", "7.3"} <= set(lines)
    assert lines == sorted(lines, key=Version.parse)
    for line in lines:
        assert any(kernels.generic_abi(p.name) and kernels.line_of(p.version) == line for p in images)


def test_the_newest_generic_build_of_each_line_is_chosen() -> None:
    images = registry()
    for line in kernels.major_lines(images):
        chosen = kernels.choose(images, line)
        assert "-cloud-" not in chosen.name and "-rt-" not in chosen.name  # cloud lacks 9p
        assert chosen.name.startswith("linux-image-") and chosen.name.endswith("-amd64")
        same_line = [p for p in images if p.name.startswith("linux-image-") and "cloud" not in p.name
                     and "-rt-" not in p.name and kernels.line_of(p.version) == line]
        assert all(dpkg_ge(chosen.version, p.version) for p in same_line), line


def test_a_newer_build_in_a_security_suite_wins() -> None:
    images = registry()
    chosen = kernels.choose(images, "6.1")
    in_bookworm = [p for p in images if p.suite == "bookworm" and kernels.generic_abi(p.name)]
    assert in_bookworm and all(dpkg_ge(chosen.version, p.version) for p in in_bookworm)
    assert chosen.suite != "bookworm"  # the captured list has newer 6.1 builds elsewhere


def test_a_line_the_registry_lacks_names_the_lines_it_has() -> None:
    with pytest.raises(kernels.KernelError, match=r"5\.10.*6\.1, 6\.12"):
        kernels.choose(registry(), "5.10")


def test_split_layout_parts_carry_the_image_abi() -> None:
    image = kernels.choose(registry(), "7.3")
    abi = kernels.generic_abi(image.name)
    parts = kernels.split_parts(image)
    assert abi and all(abi in p and p != image.name for p in parts)
    assert {p.split("-" + abi)[0] for p in parts} == {"linux-binary", "linux-modules", "linux-base"}
    with pytest.raises(kernels.KernelError):
        kernels.split_parts(Package("linux-image-7.3.4+deb13-cloud-amd64", "7.3.4-1", "amd64", "sid", ""))


def test_parse_lines() -> None:
    assert kernels.parse_lines("6.1, 6.12,6.1") == ["6.1", "6.12"]
    assert kernels.parse_lines("all") is None
    for bad in ("6", "6.1,seven", ""):
        with pytest.raises(kernels.KernelError):
            kernels.parse_lines(bad)


@pytest.mark.parametrize("layout", ["boot/vmlinuz-{r}", "usr/lib/modules/{r}/vmlinuz"])
def test_the_image_and_modules_are_found_in_either_layout(tmp_path: Path, layout: str) -> None:
    release = "7.3.4+deb13-amd64"
    image = tmp_path / layout.format(r=release)
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    modules = ("usr/" if layout.startswith("usr") else "") + f"lib/modules/{release}/kernel"
    (tmp_path / modules).mkdir(parents=True)
    assert kernels.find_image(tmp_path) == (image, release)
    base = kernels.module_base(tmp_path, release)
    assert base is not None and (base / "lib" / "modules" / release / "kernel").is_dir()


# --- the table and the version check on a real run -----------------------------------------------

def captured() -> list[Column]:
    return [matrix.column_from_record(k) for k in json.loads((DATA / "matrix.json").read_text())["kernels"]]


def column(columns: list[Column], pred) -> Column:
    found = [c for c in columns if pred(c)]
    assert found, "the captured run lacks such a kernel"
    return found[0]


def without_move(c: Column) -> bool:
    return c.record is not None and not c.record["features"] & SPEC.feature.value


def test_every_behaviour_is_a_row_and_every_kernel_a_column() -> None:
    columns = matrix.ordered(captured())
    lines = matrix.render_table(SPEC, columns).splitlines()
    header, rows = lines[0], {ln.split()[0]: ln.split()[1:] for ln in lines[1:len(SPEC.behaviours) + 1]}
    assert all(c.label in header for c in columns)
    for b in SPEC.behaviours:
        want = [matrix.CODES[c.cells[b.id].status] if b.id in c.cells else "-" if c.ran else matrix.NOT_RUN
                for c in columns]
        assert rows[b.id] == want, b.id


def test_columns_are_ordered_by_kernel_version() -> None:
    versions = [c.kernel.version for c in matrix.ordered(captured())]
    assert versions == sorted(versions)


def test_a_kernel_without_the_ioctl_gets_one_verdict() -> None:
    c = column(captured(), without_move)
    reason = c.record["probes"]["move"]["detail"]
    assert matrix.move_unsupported(c) == reason
    assert matrix.verdict(c).startswith(reason)
    assert "not conforming" not in matrix.verdict(c)
    assert all(cell.status == Status.SKIP for i, cell in c.cells.items() if i.startswith("move."))


def test_a_kernel_with_the_ioctl_gets_no_such_verdict() -> None:
    for c in captured():
        if c.record is not None and not without_move(c):
            assert matrix.move_unsupported(c) is None


def with_cell(columns: list[Column], label: str, behaviour: str, cell: Cell) -> list[Column]:
    out = []
    for c in columns:
        if c.label == label:
            c = dataclasses.replace(c, cells={**c.cells, behaviour: cell})
        out.append(c)
    return out


def kinds(found: list[matrix.Finding], behaviour: str) -> set[str]:
    return {f.kind for f in found if f.behaviour == behaviour}


def observing(columns: list[Column], b: spec.Behaviour) -> list[Column]:
    return [c for c in columns if b.id in c.cells and c.cells[b.id].outcome is not None]


def test_an_outcome_differing_within_one_spec_range_is_unexplained() -> None:
    columns = captured()
    # a behaviour with one expectation, seen alike on several real kernels
    b = next(b for b in SPEC.behaviours if not b.changes and len(observing(columns, b)) >= 3
             and len({c.cells[b.id].outcome for c in observing(columns, b)}) == 1)
    assert "unexplained" not in kinds(matrix.findings(SPEC, columns), b.id)
    odd = observing(columns, b)[0]
    changed = with_cell(columns, odd.label, b.id, Cell(Status.FAIL, "", "", "errno=EPERM"))
    found = [f for f in matrix.findings(SPEC, changed) if f.kind == "unexplained" and f.behaviour == b.id]
    assert len(found) == 1 and odd.label in found[0].kernels and "errno=EPERM" in found[0].text


def boundary_case(columns: list[Column]) -> tuple[spec.Behaviour, Column, Column]:
    """A behaviour whose spec changes between two real kernels of the run."""
    for b in SPEC.behaviours:
        for c1 in columns:
            for c2 in columns:
                e1, e2 = (b.expectation_for(c.kernel.version) for c in (c1, c2))
                if c1.ran and c2.ran and e1 is not None and e2 is not None and e1 != e2:
                    return b, c1, c2
    raise AssertionError("the captured run spans no version boundary of the spec")


def test_a_difference_across_a_spec_boundary_is_explained() -> None:
    columns = captured()
    b, c1, c2 = boundary_case(columns)
    changed = columns
    for c in observing(columns, b):  # one outcome on each side of the boundary
        outcome = "one" if b.expectation_for(c.kernel.version) == b.expectation_for(c1.kernel.version) else "two"
        changed = with_cell(changed, c.label, b.id, Cell(Status.PASS, "", "", f"errno=0 outcome-{outcome}"))
    assert {c.cells[b.id].observed for c in observing(changed, b)} == {"errno=0 outcome-one", "errno=0 outcome-two"}
    assert "unexplained" not in kinds(matrix.findings(SPEC, changed), b.id)


def test_a_failure_of_a_versioned_behaviour_is_reported_as_its_boundary() -> None:
    columns = captured()
    b, c1, _ = boundary_case(columns)
    changed = with_cell(columns, c1.label, b.id, Cell(Status.FAIL, "", "errno=0", "errno=EINVAL"))
    found = [f for f in matrix.findings(SPEC, changed) if f.kind == "boundary" and f.behaviour == b.id]
    assert any(c1.label in f.kernels and str(b.changes[0]) in f.text for f in found)


def test_a_pass_on_a_kernel_the_spec_says_predates_the_behaviour_is_reported() -> None:
    columns = captured()
    old = column(columns, without_move)
    b = next(b for b in SPEC.behaviours if b.expectation_for(old.kernel.version) is None and b.id in old.cells)
    assert "predates" not in kinds(matrix.findings(SPEC, columns), b.id)
    changed = with_cell(columns, old.label, b.id, Cell(Status.PASS, "", "", "errno=0"))
    found = [f for f in matrix.findings(SPEC, changed) if f.kind == "predates" and f.behaviour == b.id]
    assert [f.kernels for f in found] == [(old.label,)]


def test_the_feature_bit_is_held_against_the_spec_since() -> None:
    columns = captured()
    assert not [f for f in matrix.findings(SPEC, columns) if f.kind == "feature"]
    old = column(columns, without_move)
    record = {**old.record, "features": old.record["features"] | SPEC.feature.value}
    changed = [dataclasses.replace(c, record=record) if c is old else c for c in columns]
    found = [f for f in matrix.findings(SPEC, changed) if f.kind == "feature"]
    assert [f.kernels for f in found] == [(old.label,)] and str(SPEC.feature.since) in found[0].text


def test_observed_changes_say_whether_the_spec_has_the_boundary() -> None:
    columns = matrix.ordered(captured())
    b, c1, c2 = boundary_case(columns)
    lo, hi = sorted((c1, c2), key=lambda c: c.kernel.version)
    between = [c for c in observing(columns, b) if lo.kernel.version < c.kernel.version < hi.kernel.version]
    changed = with_cell(columns, lo.label, b.id, Cell(Status.PASS, "", "", "errno=0 before"))
    for c in [*between, hi]:
        changed = with_cell(changed, c.label, b.id, Cell(Status.PASS, "", "", "errno=0 after"))
    seen = matrix.observed_changes(b, changed)
    crossing = [s for s in seen if s["from"] == "errno=0 before"]
    assert len(crossing) == 1
    first_after = ([*between, hi])[0]
    on_boundary = [str(v) for v in b.changes if lo.kernel.version < v <= first_after.kernel.version]
    assert crossing[0]["spec"] == on_boundary


def test_the_matrix_record_round_trips() -> None:
    columns = matrix.ordered(captured())
    found = matrix.findings(SPEC, columns)
    record = matrix.matrix_record(SPEC, columns, found, 1.0)
    again = [matrix.column_from_record(k) for k in record["kernels"]]
    assert [(c.label, c.cells) for c in again] == [(c.label, c.cells) for c in columns]
    assert [b["id"] for b in record["behaviours"]] == [b.id for b in SPEC.behaviours]
    assert [f["text"] for f in record["findings"]] == [f.text for f in found]


# --- the HTML page --------------------------------------------------------------------------------

def build_page(tmp_path: Path, matrix_json: Path) -> str:
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nextensions = ['tools.sphinx_matrix']\n"
        f"uabi_matrix = {str(matrix_json)!r}\n")
    (src / "index.rst").write_text("Matrix\n======\n\n.. uabi-matrix::\n")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "_static" / "uabi-matrix.css").exists()
    return (out / "index.html").read_text()


def test_the_page_colours_each_cell_by_status_with_its_reason(tmp_path: Path) -> None:
    data = json.loads((DATA / "matrix.json").read_text())
    html = build_page(tmp_path, DATA / "matrix.json")
    ids = [b["id"] for b in data["behaviours"]]
    for status in ("PASS", "FAIL", "SKIP", "XFAIL"):
        want = sum(1 for k in data["kernels"] for i in ids
                   if (r := matrix_cell(k, i)) is not None and r["status"] == status)
        assert html.count(f"uabi-matrix-{status}") == want, status
    for k in data["kernels"]:
        assert k["release"] in html
    fail = next(r for k in data["kernels"] for r in k["results"] if r["status"] == "FAIL")
    assert escape(fail["observed"]) in html
    for b in data["behaviours"]:
        for v in b["changes"]:
            assert f"spec: Linux {v}" in html


def matrix_cell(kernel: dict, behaviour: str) -> dict | None:
    from tools.sphinx_matrix import cell_of
    return cell_of(kernel, behaviour)


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_the_page_says_when_the_matrix_has_not_run(tmp_path: Path) -> None:
    html = build_page(tmp_path, tmp_path / "absent.json")
    assert "Not yet run" in html and "absent.json" in html and "uabi-matrix-cell" not in html


# --- one real boot --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel61() -> kernels.Kernel:
    try:
        vm.check_tools()
    except vm.VmUnavailable as exc:
        pytest.skip(f"cannot boot kernels here: {exc}")
    try:
        images = kernels.registry_images()
        return kernels.debian_kernel(kernels.choose(images, "6.1"))
    except kernels.KernelError as exc:
        pytest.skip(f"Debian's 6.1 cannot be had: {exc}")


def test_the_image_names_the_release_its_package_installs(kernel61: kernels.Kernel) -> None:
    assert kernel61.image is not None
    assert kernels.image_release(kernel61.image) == kernel61.release


def our_processes(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(pid))
    return found


def test_a_boot_that_runs_out_of_time_leaves_no_process(kernel61: kernels.Kernel, tmp_path: Path) -> None:
    assert kernel61.image is not None
    out = tmp_path / "short"
    run = vm.run(kernel61.image, ["true"], out, timeout=60, boot_timeout=2)
    assert not run.booted and run.exit_code is None and "did not boot within 2 s" in (run.problem or "")
    assert our_processes(str(out)) == []


def test_linux_6_1_boots_and_every_move_behaviour_is_skipped_as_unsupported(
        kernel61: kernels.Kernel, tmp_path: Path) -> None:
    out = tmp_path / "matrix.json"
    proc = subprocess.run([*CLI, "--debian", "6.1", "--json", str(out), "--timeout", str(BOOT_TIMEOUT - 60)],
                          cwd=ROOT, capture_output=True, text=True, timeout=BOOT_TIMEOUT)
    assert out.exists(), proc.stderr
    data = json.loads(out.read_text())
    col = next(k for k in data["kernels"] if k["label"] == "6.1")
    host = next(k for k in data["kernels"] if k["host"])
    assert host["release"] == os.uname().release and host["results"]
    assert col["release"] == kernel61.release and col["problem"] is None, col["problem"]
    assert not col["features"] & SPEC.feature.value
    reason = col["probes"]["move"]["detail"]
    assert not col["probes"]["move"]["ok"]
    assert col["move_unsupported"] == reason and col["verdict"].startswith(reason)
    moves = [r for r in col["results"] if r["id"].startswith("move.")]
    assert moves
    wrong = [(r["id"], r["status"], r["reason"]) for r in moves if (r["status"], r["reason"]) != ("SKIP", reason)]
    assert wrong == []
    # what 6.1 can be asked, it answers as the spec says
    v = Version.parse(col["release"])
    for r in col["results"]:
        b = SPEC.behaviour(r["id"])
        if not r["id"].startswith("move.") and b.expectation_for(v) is not None:
            assert r["status"] == "PASS", r
    assert "6.1" in proc.stdout.splitlines()[0]  # the table's header
    assert our_processes(str(out.parent)) == []
