"""`uffd-uabi header` against real headers: the installed 6.1 one (which
predates UFFDIO_MOVE), Debian's 6.12 one (which has it), and a copy of the
6.12 one with a flag bit and two fields changed.  Every expectation is
computed from the model; the header values come from the C compiler."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import spec
from spec.model import Version
from tools import cli, cprobe, debian, header

SPEC = spec.load()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli.main(["header", "--json", "-", *args])
    return code, json.loads(capsys.readouterr().out)


def verdicts(report: dict) -> dict[str, str]:
    return {row["item"]: row["verdict"] for row in report["items"]}


def expected_item_count() -> int:
    """One row per named constant, per struct, per field offset and size,
    and per integer field's signedness."""
    fields = [f for s in SPEC.structs for f in s.fields]
    integers = [f for f in fields if f.ctype.struct is None and f.ctype.count == 1 and "[" not in f.ctype.name]
    return len(SPEC.values()) + len(SPEC.structs) + 2 * len(fields) + len(integers)


@pytest.fixture(scope="session")
def libc_dev_612() -> Path:
    """Debian's linux-libc-dev 6.12, downloaded once into the project's cache."""
    try:
        return debian.fetch("linux-libc-dev", "6.12", debian.DEFAULT_CACHE)
    except debian.FetchError as exc:
        pytest.skip(f"Debian's registry cannot be reached: {exc}")


@pytest.fixture(scope="session")
def header_612(libc_dev_612: Path) -> Path:
    path = libc_dev_612 / "usr" / "include" / SPEC.header
    assert path.is_file()
    return path


def installed_libc_dev() -> Version | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "linux-libc-dev"], capture_output=True, text=True)
    return Version.parse(proc.stdout) if proc.returncode == 0 and proc.stdout else None


def test_installed_header_lacks_the_ioctl(capsys: pytest.CaptureFixture[str]) -> None:
    version = installed_libc_dev()
    if version is None or not version < SPEC.since:
        pytest.skip(f"the installed linux-libc-dev is {version}, not older than {SPEC.since}")
    code, report = run(capsys)
    assert code == header.EXIT_ABSENT
    got = verdicts(report)
    assert len(got) == expected_item_count()
    assert header.MISMATCH not in got.values()
    subject = [SPEC.ioctl.name, SPEC.ioctl.nr_name, SPEC.feature.name]
    subject += [f.name for fs in SPEC.flags for f in fs.values]
    for name in subject:
        assert got[name] == header.ABSENT, name
    assert got[cprobe.struct_size(SPEC.struct.name).key] == header.ABSENT
    for f in SPEC.struct.fields:
        assert got[cprobe.field_offset(SPEC.struct.name, f.name).key] == header.ABSENT
    assert f"struct {SPEC.struct.name}" in report["absent"]
    assert SPEC.ioctl.name in report["absent"]
    # What the older header has agrees with the spec.
    assert header.MATCH in got.values()


def test_installed_header_report_says_absent(capsys: pytest.CaptureFixture[str]) -> None:
    version = installed_libc_dev()
    if version is None or not version < SPEC.since:
        pytest.skip(f"the installed linux-libc-dev is {version}, not older than {SPEC.since}")
    code = cli.main(["header", "--problems"])
    out = capsys.readouterr().out
    assert code == header.EXIT_ABSENT
    tail = out.split("\nabsent from this header: ", 1)
    assert len(tail) == 2
    named = " ".join(tail[1].split()).split(", ")  # wrapped over indented lines
    assert f"struct {SPEC.struct.name}" in named and SPEC.ioctl.name in named
    rows = [line.split() for line in out.splitlines() if line.startswith(SPEC.ioctl.name + " ")]
    assert rows == [[SPEC.ioctl.name, f"{SPEC.ioctl.request:#x}", "absent", "absent"]]


@pytest.mark.parametrize("form", ["--debian", "suite", "tree", "file"])
def test_debian_612_header_matches_the_spec(capsys: pytest.CaptureFixture[str], libc_dev_612: Path,
                                             header_612: Path, form: str) -> None:
    args = {
        "--debian": ["--debian", "6.12"],
        "suite": ["--debian", "trixie"],
        "tree": ["--header", str(libc_dev_612)],
        "file": ["--header", str(header_612)],
    }[form]
    code, report = run(capsys, *args)
    got = verdicts(report)
    assert {v for v in got.values()} == {header.MATCH}, [k for k, v in got.items() if v != header.MATCH]
    assert len(got) == expected_item_count()
    assert code == header.EXIT_MATCH
    by_item = {row["item"]: row for row in report["items"]}
    assert by_item[SPEC.ioctl.name]["header"] == SPEC.ioctl.request
    assert by_item[cprobe.struct_size(SPEC.struct.name).key]["header"] == SPEC.struct.size


def test_edited_header_is_reported_as_mismatches(capsys: pytest.CaptureFixture[str], header_612: Path,
                                                 tmp_path: Path) -> None:
    """A flag moved to a free bit, and the first and last fields of the
    subject struct swapped: exactly those rows differ, with the values the
    edit implies."""
    flags = next(fs for fs in SPEC.flags if fs.struct == SPEC.struct.name)
    flag = next(f for f in flags.values if f.name.endswith("ALLOW_SRC_HOLES"))
    free_bit = max(f.bit for f in flags.values) + 1
    text = header_612.read_text()
    text, n = re.subn(rf"^(#define\s+{flag.name}\s).*$", rf"\g<1>((__u64)1<<{free_bit})", text, flags=re.M)
    assert n == 1
    first, last = SPEC.struct.fields[0], SPEC.struct.fields[-1]
    block = re.search(rf"^struct {SPEC.struct.name} {{\n.*?^}};", text, flags=re.M | re.S)
    assert block is not None
    decl = {f.name: re.search(rf"^\s*\w+\s+{f.name};$", block.group(0), flags=re.M) for f in (first, last)}
    assert all(decl.values())
    a, b = decl[first.name], decl[last.name]
    assert a is not None and b is not None
    body = block.group(0)
    swapped = body[: a.start()] + b.group(0) + body[a.end(): b.start()] + a.group(0) + body[b.end():]
    edited = tmp_path / "userfaultfd.h"
    edited.write_text(text[: block.start()] + swapped + text[block.end():])

    code, report = run(capsys, "--header", str(edited))
    assert code == header.EXIT_MISMATCH
    rows = {row["item"]: row for row in report["items"]}
    wrong = {item: (row["spec"], row["header"]) for item, row in rows.items() if row["verdict"] != header.MATCH}
    assert wrong == {
        flag.name: (flag.value, 1 << free_bit),
        cprobe.field_offset(SPEC.struct.name, first.name).key: (first.offset, last.offset),
        cprobe.field_offset(SPEC.struct.name, last.name).key: (last.offset, first.offset),
    }
    assert {rows[item]["verdict"] for item in wrong} == {header.MISMATCH}


def test_renamed_field_and_non_integer_member_are_mismatches(capsys: pytest.CaptureFixture[str],
                                                             header_612: Path, tmp_path: Path) -> None:
    """The header's struct exists but differs: a field under another name is
    not "absent" (an older header) but a mismatch, and so is a member that
    is no longer an integer."""
    renamed, wrapped = SPEC.struct.fields[0], next(f for f in SPEC.struct.fields if f.ctype.signed)
    text = header_612.read_text()
    block = re.search(rf"^struct {SPEC.struct.name} {{\n.*?^}};", text, flags=re.M | re.S)
    assert block is not None
    body, n = re.subn(rf"^(\s*\w+\s+){renamed.name};$", rf"\g<1>{renamed.name}_renamed;", block.group(0), flags=re.M)
    assert n == 1
    body, n = re.subn(rf"^(\s*)(\w+)\s+{wrapped.name};$", rf"\1union {{ \2 v; }} {wrapped.name};", body, flags=re.M)
    assert n == 1
    edited = tmp_path / "userfaultfd.h"
    edited.write_text(text[: block.start()] + body + text[block.end():])

    code, report = run(capsys, "--header", str(edited))
    assert code == header.EXIT_MISMATCH
    wrong = {row["item"]: row["header"] for row in report["items"] if row["verdict"] != header.MATCH}
    s, f = SPEC.struct.name, renamed.name
    assert wrong == {
        cprobe.field_offset(s, f).key: "no such field",
        cprobe.field_size(s, f).key: "no such field",
        cprobe.field_signed(s, f).key: "no such field",
        cprobe.field_signed(s, wrapped.name).key: "not an integer",
    }
    assert {row["verdict"] for row in report["items"] if row["item"] in wrong} == {header.MISMATCH}


def test_header_that_does_not_compile_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "userfaultfd.h"
    broken.write_text("#include <linux/types.h>\nstruct uffdio_move { __u64 dst };\nnot C at all\n")
    code = cli.main(["header", "--header", str(broken)])
    captured = capsys.readouterr()
    assert code == header.EXIT_ERROR
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("uffd-uabi header:")]
    assert len(lines) == 1 and str(broken) in lines[0], captured.err


def test_version_prefixes_match_whole_components() -> None:
    assert debian.version_matches("6.12.117-1", "6.12")
    assert debian.version_matches("6.12.117-1", "6.12.117-1")
    assert not debian.version_matches("6.120.1-1", "6.12")
    assert not debian.version_matches("6.1.187-1", "6.12")
    assert debian.version_matches("6.1.187-1", "6.1")
