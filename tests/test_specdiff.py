"""`uffd-uabi diff` on real pairs of specs: the bundled spec and a copy of
its YAML text with one edit, each edit of a kind a reviewer must tell
apart (break, extension, documentation), and specs read from git."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import spec
from spec.model import Version
from tools import cli, specdiff

TEXT = spec.DEFAULT_SPEC.read_text()
SPEC = spec.load()
ROOT = Path(__file__).resolve().parents[1]


def edit(tmp_path: Path, old: str, new: str, text: str = TEXT, name: str = "new.yaml") -> Path:
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    spec.load(path)  # the edit itself must give a valid spec
    return path


def diff(capsys: pytest.CaptureFixture[str], old: str, new: str) -> tuple[int, dict]:
    code = cli.main(["diff", old, new, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def changes(report: dict, kind: str) -> list[dict]:
    return [c for c in report["changes"] if c["class"] == kind]


def behaviour_block(id_: str) -> str:
    """The YAML text of one behaviour, from its id line to the next entry."""
    m = re.search(rf"^  - id: {re.escape(id_)}\n.*?(?=^  - id: |^\S)", TEXT, flags=re.M | re.S)
    assert m is not None
    return m.group(0)


def newest_version_named(s: spec.Spec) -> Version:
    versions = [s.since, *(h.version for h in s.history)]
    versions += [v for b in s.behaviours for e in b.expect for v in (e.kernels.since, e.kernels.until) if v]
    return max(versions)


def test_identical_specs_have_no_changes(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(spec.DEFAULT_SPEC))
    assert (code, report["verdict"], report["changes"]) == (0, "none", [])


def test_flag_bit_changed_is_a_break(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = SPEC.flags[0]
    flag = flags.values[-1]
    free = max(f.bit for f in flags.values) + 1
    new = edit(tmp_path, f"- name: {flag.name}\n        bit: {flag.bit}\n",
               f"- name: {flag.name}\n        bit: {free}\n")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1 and report["verdict"] == specdiff.BREAK
    (change,) = report["changes"]
    assert change["class"] == specdiff.BREAK
    assert flag.name in change["item"] and f"bit {flag.bit} -> {free}" in change["change"]


def test_field_signedness_changed_is_a_break(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    field = next(f for f in SPEC.struct.fields if f.ctype.signed)
    unsigned = field.ctype.name.replace("__s", "__u")
    new = edit(tmp_path, f"- name: {field.name}\n      type: {field.ctype.name}\n",
               f"- name: {field.name}\n      type: {unsigned}\n")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1
    (change,) = report["changes"]
    assert change["class"] == specdiff.BREAK and f"{SPEC.struct.name}.{field.name}" in change["item"]
    assert f"{field.ctype.name} -> {unsigned}" in change["change"] and "signed -> unsigned" in change["change"]


def test_field_widened_is_a_break(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The last member of a context struct grows by one element, and the
    struct with it: both are breaks."""
    struct = next(s for s in SPEC.context_structs if s.fields[-1].ctype.count > 1)
    field = struct.fields[-1]
    wider = f"{field.ctype.base}[{field.ctype.count + 1}]"
    grown = struct.size + field.size // field.ctype.count
    text = TEXT.replace(f"- name: {struct.name}\n      size: {struct.size}\n",
                        f"- name: {struct.name}\n      size: {grown}\n")
    new = edit(tmp_path, f'{{name: {field.name}, type: "{field.ctype.name}"', f'{{name: {field.name}, type: "{wider}"',
               text=text)
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1
    breaks = {c["item"]: c["change"] for c in changes(report, specdiff.BREAK)}
    assert len(breaks) == 2 and len(report["changes"]) == 2
    assert f"size {struct.size} -> {grown}" in breaks[f"struct {struct.name}"]
    assert f"{field.ctype.name} -> {wider}" in breaks[f"field {struct.name}.{field.name}"]


def test_errno_changed_on_covered_kernels_is_a_break(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A behaviour no ERRORS entry lists may change its errno without other
    edits; on kernels it covered, that breaks programs that test for it."""
    listed = {b for e in SPEC.errors for b in e.behaviours}
    b = next(b for b in SPEC.behaviours if b.id not in listed and any(e.errno for e in b.expect))
    e = next(e for e in b.expect if e.errno)
    other = "ENOSYS" if e.errno != "ENOSYS" else "ENOTTY"
    block = behaviour_block(b.id)
    new = edit(tmp_path, block, block.replace(f"errno: {e.errno}", f"errno: {other}", 1))
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1
    (change,) = report["changes"]
    assert change["class"] == specdiff.BREAK and b.id in change["item"]
    assert f"errno {e.errno} -> {other}" in change["change"]


def test_new_flag_is_an_extension(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = SPEC.flags[0]
    name = flags.values[0].name.rsplit("_", 1)[0] + "_TEST_ONLY"
    free = max(f.bit for f in flags.values) + 1
    first = flags.values[0]
    entry = (f"      - name: {name}\n        bit: {free}\n        doc: |\n          A flag made up by a test.\n"
             f"        behaviours: [{first.behaviours[0]}]\n")
    new = edit(tmp_path, f"      - name: {first.name}\n", entry + f"      - name: {first.name}\n")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 0 and report["verdict"] == specdiff.EXTENSION
    (change,) = report["changes"]
    assert change["class"] == specdiff.EXTENSION and name in change["item"]


def test_prose_edit_is_documentation_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = SPEC.ioctl.doc.source.splitlines()[0]
    assert line.endswith(".")
    new = edit(tmp_path, line + "\n", line[:-1] + ", as the kernel sees it.\n")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 0 and report["verdict"] == specdiff.DOCS
    (change,) = report["changes"]
    assert change["class"] == specdiff.DOCS and SPEC.ioctl.name in change["item"]


def split_behaviour(tmp_path: Path, at: Version) -> tuple[Path, str, str, str]:
    """Close the open range of a one-range behaviour at `at`, and add a
    range from `at` with another errno."""
    b = next(b for b in SPEC.behaviours if len(b.expect) == 1 and b.expect[0].kernels.since
             and b.expect[0].kernels.until is None and b.expect[0].errno and not b.unobservable)
    e = b.expect[0]
    other = "EINVAL" if e.errno != "EINVAL" else "ENOENT"
    block = behaviour_block(b.id)
    line = next(ln for ln in block.splitlines() if f'since: "{e.kernels.since}"' in ln)
    closed = line.replace(f'since: "{e.kernels.since}"', f'since: "{e.kernels.since}", until: "{at}"')
    appended = line.replace(f'since: "{e.kernels.since}"', f'since: "{at}"').replace(f"errno: {e.errno}",
                                                                                        f"errno: {other}")
    return edit(tmp_path, block, block.replace(line, closed + "\n" + appended)), b.id, e.errno, other


def test_new_kernel_range_for_newer_kernels_is_an_extension(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    horizon = newest_version_named(SPEC)
    newer = Version(horizon.major + 1, 0)
    new, id_, was, now = split_behaviour(tmp_path, newer)
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 0 and report["verdict"] == specdiff.EXTENSION
    (change,) = report["changes"]
    assert change["class"] == specdiff.EXTENSION and id_ in change["item"]
    assert f"since {newer}" in change["change"] and f"errno {was} -> {now}" in change["change"]


def test_new_kernel_range_inside_known_kernels_is_a_break(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    """The same edit at a kernel the old spec already names changes what it
    promised for that kernel."""
    known = max(h.version for h in SPEC.history)
    new, id_, was, now = split_behaviour(tmp_path, known)
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1
    (change,) = report["changes"]
    assert change["class"] == specdiff.BREAK and id_ in change["item"]
    assert f"since {known}" in change["change"] and f"errno {was} -> {now}" in change["change"]


def git_spec(rev_path: str) -> str:
    return subprocess.run(["git", "show", rev_path], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_rev_path_reads_the_spec_from_git(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rev = "HEAD:spec/uffdio_move.yaml"
    committed = git_spec(rev)
    same = tmp_path / "same.yaml"
    same.write_text(committed)
    code, report = diff(capsys, rev, str(same))
    assert (code, report["verdict"], report["old"]) == (0, "none", rev)

    flags = spec.loads(committed, rev).flags[0]
    flag = flags.values[0]
    free = max(f.bit for f in flags.values) + 1
    moved = edit(tmp_path, f"- name: {flag.name}\n        bit: {flag.bit}\n",
                 f"- name: {flag.name}\n        bit: {free}\n", text=committed, name="moved.yaml")
    code = cli.main(["diff", rev, str(moved)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0] == f"old: {rev}" and flag.name in out


@pytest.mark.parametrize("where", ["HEAD:pyproject.toml", "no-such-revision:spec/uffdio_move.yaml"])
def test_broken_rev_path_names_itself(capsys: pytest.CaptureFixture[str], where: str) -> None:
    code = cli.main(["diff", where, str(spec.DEFAULT_SPEC)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert re.fullmatch(rf"{re.escape(where)}:\d+:\d+: .+", err), err


def test_markdown_groups_changes_under_their_class(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags = SPEC.flags[0]
    flag = flags.values[-1]
    free = max(f.bit for f in flags.values) + 1
    text = TEXT.replace(f"- name: {flag.name}\n        bit: {flag.bit}\n", f"- name: {flag.name}\n        bit: {free}\n")
    line = SPEC.ioctl.doc.source.splitlines()[0]
    new = edit(tmp_path, line + "\n", line[:-1] + ", as the kernel sees it.\n", text=text)
    code = cli.main(["diff", str(spec.DEFAULT_SPEC), str(new), "--format", "markdown"])
    out = capsys.readouterr().out
    assert code == 1
    sections = re.split(r"^#### ", out, flags=re.M)
    assert sections[0].startswith(f"### uABI review: {specdiff.TITLES[specdiff.BREAK]}")
    titles = {s.splitlines()[0]: s for s in sections[1:]}
    assert set(titles) == {f"{specdiff.TITLES[specdiff.BREAK]} (1)", f"{specdiff.TITLES[specdiff.DOCS]} (1)"}
    assert f"`{flag.name}`" in titles[f"{specdiff.TITLES[specdiff.BREAK]} (1)"]


def test_stating_an_open_outcome_extends_changing_one_breaks(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    """An outcome key the old spec left out was not promised: stating it adds
    knowledge.  Changing one it stated changes the promise."""
    b = next(b for b in SPEC.behaviours if len(b.expect) == 1 and b.expect[0].memory == "unchanged"
             and b.expect[0].wake is None)
    block = behaviour_block(b.id)
    assert block.count("memory: unchanged}") == 1
    stated = edit(tmp_path, block, block.replace("memory: unchanged}", "memory: unchanged, wake: blocked}"),
                  name="stated.yaml")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(stated))
    assert code == 0
    (change,) = report["changes"]
    assert change["class"] == specdiff.EXTENSION and b.id in change["item"] and "wake blocked" in change["change"]

    changed = edit(tmp_path, block, block.replace("memory: unchanged}", "memory: moved}"), name="changed.yaml")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(changed))
    assert code == 1
    (change,) = report["changes"]
    assert change["class"] == specdiff.BREAK and "memory unchanged -> moved" in change["change"]


def test_flag_removed_is_a_break(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # A flag no precedence step names (`unless`), so the rest of the spec
    # stays valid without it.
    named = {step.unless for step in SPEC.precedence}
    flag = next(f for f in SPEC.flags[0].values if f.name not in named)
    m = re.search(rf"^      - name: {flag.name}\n(?:        .*\n|          .*\n)*", TEXT, flags=re.M)
    assert m is not None
    new = edit(tmp_path, m.group(0), "")
    code, report = diff(capsys, str(spec.DEFAULT_SPEC), str(new))
    assert code == 1
    assert [(c["class"], c["change"]) for c in report["changes"] if flag.name in c["item"]] == \
        [(specdiff.BREAK, "removed")]
