"""The spec loader: the real spec loads, its derived numbers are the
kernel's, and every kind of broken spec gets one FILE:LINE:COL line and
exit status 2 from the CLI, with no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import spec
from spec.model import Version

SPEC_TEXT = spec.DEFAULT_SPEC.read_text()


def test_bundled_spec_loads() -> None:
    s = spec.load()
    assert s.ioctl.name == "UFFDIO_MOVE"
    ids = [b.id for b in s.behaviours]
    assert len(ids) == len(set(ids))


def test_request_code_is_derived_from_ioc_fields() -> None:
    """_IOWR(0xAA, 0x05, 40 bytes) by the generic _IOC layout, as the kernel
    header spells it; the expected value is computed here by hand from the
    asm-generic definitions, independently of spec.model.Ioc.encode."""
    s = spec.load()
    io_read, io_write = 2, 1
    expected = ((io_read | io_write) << 30) | (s.struct.size << 16) | (s.ioctl.type_value << 8) | s.ioctl.nr
    assert s.ioctl.request == expected
    assert s.ioctl.macro == "_IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)"


def test_struct_layout_is_packed_and_move_is_output_only() -> None:
    s = spec.load()
    end = 0
    for f in s.struct.fields:
        assert f.offset == end, f.name
        end += f.size
    assert end == s.struct.size
    out = [f.name for f in s.struct.fields if f.dir == "out"]
    assert out == ["move"]
    assert s.struct.copied_in == s.struct.field("move").offset


def test_expectation_follows_the_running_version() -> None:
    b = spec.load().behaviour("move.errno.ENOENT.dst-no-vma")
    old, new = b.expectation_for(Version(6, 8)), b.expectation_for(Version(6, 18))
    assert old is not None and new is not None
    assert (old.errno, new.errno) == ("EINVAL", "ENOENT")
    assert b.expectation_for(Version(6, 1)) is None
    assert b.changes == (Version(6, 9),)


def test_every_error_and_step_names_existing_behaviours() -> None:
    s = spec.load()
    ids = {b.id for b in s.behaviours}
    for e in s.errors:
        assert set(e.behaviours) <= ids
    assert {st.behaviour for st in s.precedence} <= ids


# --- the corpus of broken specs -------------------------------------------

@dataclass(frozen=True)
class Broken:
    name: str
    old: str          # text to replace (must occur in the spec)
    new: str          # replacement
    anchor: str       # a line of `new` (or the file) the error must point at
    message: str      # a regex the message must match
    occurrence: int = 1  # which occurrence of `old` to replace


CORPUS = [
    Broken("yaml-unclosed-flow", "nr: {name: _UFFDIO_MOVE, value: 0x05}",
           "nr: {name: _UFFDIO_MOVE, value: 0x05", "dir: [read, write]", r"YAML syntax error"),
    Broken("yaml-tab-indent", "  dir: [read, write]\n  arg: uffdio_move",
           "  dir: [read, write]\n\targ: uffdio_move", "\targ: uffdio_move", r"YAML syntax error"),
    Broken("duplicate-key", "  size: 40\n  copied-in: 32",
           "  size: 40\n  size: 40\n  copied-in: 32", "  size: 40\n  copied-in", r"duplicate key 'size'"),
    Broken("unknown-top-key", "schema-version: 1", "schema-version: 1\ncolour: red",
           "colour: red", r"unknown key 'colour'"),
    Broken("unknown-behaviour-key", "    summary: a move of present pages",
           "    summary: a move of present pages\n    severity: high", "    severity: high",
           r"unknown key 'severity'"),
    Broken("unknown-expectation-key", "- {since: \"6.8\", move: len, memory: moved, wake: woken}",
           "- {since: \"6.8\", move: len, memory: moved, wakes: woken}", "wakes: woken",
           r"unknown key 'wakes'"),
    Broken("wrong-type-size", "  size: 40\n  copied-in: 32", "  size: forty\n  copied-in: 32",
           "  size: forty", r"expected integer"),
    Broken("wrong-enum-source", "    summary: a move of present pages\n    source: seed",
           "    summary: a move of present pages\n    source: rumour", "    source: rumour",
           r"'rumour' is not one of: seed, kernel"),
    Broken("missing-doc", "        bit: 0\n        doc: |\n          Do not wake up the thread that waits for page-fault resolution.\n",
           "        bit: 0\n", "      - name: UFFDIO_MOVE_MODE_DONTWAKE", r"missing required key 'doc'"),
    Broken("duplicate-behaviour-id", "  - id: move.move-output-only", "  - id: move.success",
           "  - id: move.success", r"duplicate behaviour id 'move.success'", 1),
    Broken("dangling-error-ref", "    behaviours: [move.errno.EINVAL.mode-unknown]",
           "    behaviours: [move.errno.EINVAL.mode-unkown]", "move.errno.EINVAL.mode-unkown",
           r"unknown behaviour 'move.errno.EINVAL.mode-unkown'"),
    Broken("dangling-precedence-ref", "behaviour: move.errno.EFAULT.arg}",
           "behaviour: move.errno.EFAULT.argp}", "move.errno.EFAULT.argp}",
           r"unknown behaviour 'move.errno.EFAULT.argp'"),
    Broken("overlapping-flag-bits", "      - name: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES\n        bit: 1",
           "      - name: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES\n        bit: 0", "        bit: 0",
           r"bit 0 is already UFFDIO_MOVE_MODE_DONTWAKE", 1),
    Broken("flag-bit-outside-field", "      - name: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES\n        bit: 1",
           "      - name: UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES\n        bit: 64", "        bit: 64",
           r"bit 64 is outside the 64-bit field uffdio_move.mode"),
    Broken("feature-bit-outside-field", "  bit: 16\n", "  bit: 70\n", "  bit: 70",
           r"bit 70 is outside the 64-bit field uffdio_api.features"),
    Broken("bad-version-form", 'since: "6.8"\ncommit', 'since: "6.x"\ncommit', 'since: "6.x"',
           r"not of the form a kernel version"),
    Broken("implausible-version", 'since: "6.8"\ncommit', 'since: "1.8"\ncommit', 'since: "1.8"',
           r"not a plausible Linux version"),
    Broken("empty-kernel-range", '- {since: "6.8", until: "6.9", errno: EBUSY',
           '- {since: "6.9", until: "6.8", errno: EBUSY', 'until: "6.8", errno: EBUSY',
           r"empty kernel range"),
    Broken("overlapping-kernel-ranges", '      - {since: "6.15", errno: EAGAIN, move: -errno, memory: unchanged}',
           '      - {since: "6.14", errno: EAGAIN, move: -errno, memory: unchanged}',
           'since: "6.14", errno: EAGAIN', r"overlaps"),
    Broken("offset-contradicts-types", "      type: __u64\n      dir: in\n      offset: 16",
           "      type: __u64\n      dir: in\n      offset: 20", "      offset: 20",
           r"offset 20 contradicts the types \(the C layout puts it at 16\)"),
    Broken("size-contradicts-fields", "  size: 40\n  copied-in: 32", "  size: 48\n  copied-in: 32",
           "  size: 48", r"size 48 contradicts the fields \(they add up to 40\)"),
    Broken("unknown-c-type", "    - name: move\n      type: __s64", "    - name: move\n      type: __s128",
           "      type: __s128", r"not of the form a uABI type"),
    Broken("error-errno-not-expected", "  - errno: EBUSY\n", "  - errno: EPERM\n", "  - errno: EPERM",
           r"EPERM: its behaviour move.errno.EBUSY.fork-cow never expects it"),
    Broken("two-sentences-one-line", "Move a continuous memory chunk into the userfault registered range and optionally wake up the blocked thread.\n",
           "Move a chunk. Then wake up the blocked thread.\n", "    Move a chunk.", r"two sentences on one line"),
    Broken("unbalanced-markup", "    The kernel reads only the first four fields of *uffdio_move* and writes only *move*.",
           "    The kernel reads only the first four fields of *uffdio_move* and writes only *move.",
           "writes only *move.",
           r"unbalanced '\*' markup"),
    Broken("history-not-rising", '  - {version: "6.13", doc:', '  - {version: "6.5", doc:', 'version: "6.5"',
           r"history must be in rising order"),
    Broken("nr-too-wide", "nr: {name: _UFFDIO_MOVE, value: 0x05}", "nr: {name: _UFFDIO_MOVE, value: 0x105}",
           "value: 0x105", r"does not fit in 8 bits"),
    Broken("copied-in-mid-field", "  copied-in: 32", "  copied-in: 30", "  copied-in: 30",
           r"copied-in 30 does not end on a field"),
    Broken("unknown-field-ref", "    field: uffdio_move.mode\n", "    field: uffdio_move.modes\n",
           "    field: uffdio_move.modes", r"struct uffdio_move has no field 'modes'"),
    Broken("duplicate-constant", "    - {name: UFFD_API, value: 0xAA,", "    - {name: UFFDIO_MOVE, value: 0xAA,",
           "{name: UFFDIO_MOVE, value: 0xAA", r"UFFDIO_MOVE is already defined"),
    Broken("empty-file", SPEC_TEXT, "", "", r"empty spec"),
]


def _apply(case: Broken) -> tuple[str, int]:
    """The broken text, and the 1-based line the error must point at."""
    assert SPEC_TEXT.count(case.old) >= case.occurrence, f"{case.name}: the spec changed; update the case"
    start = -1
    for _ in range(case.occurrence):
        start = SPEC_TEXT.index(case.old, start + 1)
    text = SPEC_TEXT[:start] + case.new + SPEC_TEXT[start + len(case.old):]
    if not case.anchor:
        return text, 1
    # The anchor is looked for from the edit onwards, then anywhere.
    pos = text.find(case.anchor, start)
    if pos < 0:
        pos = text.index(case.anchor)
    return text, text.count("\n", 0, pos) + 1


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_broken_spec_gives_one_located_line(case: Broken, tmp_path: Path) -> None:
    text, line = _apply(case)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "validate", "--spec", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = re.fullmatch(r"bad\.yaml:(\d+):(\d+): (.+)", lines[0])
    assert m, lines[0]
    assert int(m.group(1)) == line, lines[0]
    assert re.search(case.message, m.group(3)), lines[0]


def test_corpus_is_large_and_distinct() -> None:
    assert len(CORPUS) >= 20
    assert len({c.name for c in CORPUS}) == len(CORPUS)


def test_validate_reports_the_derived_numbers() -> None:
    s = spec.load()
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "validate"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{s.ioctl.request:#010x}" in proc.stdout
    assert f"{len(s.behaviours)} behaviours" in proc.stdout
