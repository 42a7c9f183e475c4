"""The generated man pages, read the way their users read them: rendered by
the real man/groff, linted the way the man-pages project lints, and spliced
into the real monolithic ioctl_userfaultfd(2) page Debian ships."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import spec as specpkg
from spec.model import Spec
from spec.prose import Bold, Italic, Line, ManRef, Prose, Text, parse
from tools import manlint
from tools.cli import main
from tools.roff import Roff

DEBIAN_PAGE = Path("/usr/share/man/man2/ioctl_userfaultfd.2.gz")
# man-pages(7): the order of sections when present.
SECTION_ORDER = ["NAME", "LIBRARY", "SYNOPSIS", "CONFIGURATION", "DESCRIPTION", "OPTIONS",
                 "EXIT STATUS", "RETURN VALUE", "ERRORS", "ENVIRONMENT", "FILES", "ATTRIBUTES",
                 "VERSIONS", "STANDARDS", "HISTORY", "NOTES", "CAVEATS", "BUGS", "EXAMPLES",
                 "AUTHORS", "REPORTING BUGS", "COPYRIGHT", "SEE ALSO"]
MACROS = {"TH", "SH", "SS", "P", "TP", "IP", "RS", "RE", "B", "I", "BR", "RB", "IR", "RI",
          "BI", "IB", "nf", "fi", "EX", "EE", "in", "PD", '\\"'}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return specpkg.load()


@pytest.fixture(scope="module")
def members(spec: Spec) -> set[str]:
    """What man-pages writes with a leading dot: the members of the structs."""
    return {f.name for f in spec.struct.fields} | {spec.feature.field, spec.range_ioctl.field}


def generate(out: Path, *extra: str) -> int:
    return main(["man", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def pages(spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("man")
    assert generate(out) == 0
    page = out / "man2const" / f"{spec.ioctl.name}.2const"
    fragment = out / "man2" / f"ioctl_userfaultfd.2.{spec.ioctl.name}"
    assert page.is_file() and fragment.is_file()
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted([page, fragment])
    return {"page": page, "fragment": fragment}


def shown(path: Path) -> str:
    """The page as man(1) shows it, hyphenation undone, blanks collapsed."""
    text = manlint.render(path)
    text = re.sub("\u2010\n\\s*", "", text)  # hyphenation
    text = re.sub(r"(?<=\w)-\n\s*", "-", text)  # a break after a hyphen of the source
    return " ".join(text.split())


def wrapped(fragment: Path, tmp: Path) -> Path:
    page = tmp / "wrapped.2"
    page.write_text('.TH WRAPPED 2 2000-01-01 "test"\n.SH DESCRIPTION\n' + fragment.read_text())
    return page


def plain(line: Line, members: set[str]) -> str:
    """A sentence as the reader sees it: markup gone, members dotted."""
    out = []
    for span in line:
        if isinstance(span, ManRef):
            out.append(f"{span.page}({span.section})")
        elif isinstance(span, Italic) and span.text in members:
            out.append("." + span.text)
        else:
            out.append(span.text)
    return " ".join("".join(out).replace("\\-", "-").split())


def sentences(prose: Prose, members: set[str]) -> list[str]:
    return [plain(line, members) for p in prose.paragraphs for line in p.lines]


def section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f".SH {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(".SH ")), len(lines))
    return lines[start + 1 : end]


def args(line: str) -> list[str]:
    """The arguments of a macro line, roff quoting undone."""
    found = re.finditer(r'"([^"]*)"|(\S+)', line.split(" ", 1)[1])
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in found]


def tags(lines: list[str]) -> list[str]:
    """The first word of each .TP tag of a list."""
    return [args(lines[i + 1])[0] for i, line in enumerate(lines) if line == ".TP"]


# --- content -----------------------------------------------------------------
def test_rendered_page_names_everything(spec: Spec, pages: dict[str, Path], tmp_path: Path) -> None:
    for path in (pages["page"], wrapped(pages["fragment"], tmp_path)):
        text = shown(path)
        assert spec.ioctl.name in text
        for fs in spec.flags:
            for flag in fs.values:
                assert flag.name in text
        for error in spec.errors:
            assert error.errno in text
        for f in spec.struct.fields:
            assert re.search(rf"{re.escape(f.ctype.base)}\s+{f.name};", text), f.name
            assert "." + f.name in text
        assert spec.feature.name in text


def test_every_sentence_of_the_model_is_on_both_pages(spec: Spec, members: set[str],
                                                      pages: dict[str, Path], tmp_path: Path) -> None:
    docs = [spec.ioctl.doc, spec.struct.doc, *(f.doc for f in spec.struct.fields),
            *(fs.doc for fs in spec.flags), *(f.doc for fs in spec.flags for f in fs.values),
            spec.feature.doc, spec.range_ioctl.doc, spec.return_value,
            *(e.doc for e in spec.errors), *(n.doc for n in spec.notes), *(b.doc for b in spec.bugs),
            spec.precedence_doc]
    cited = spec.cited()
    docs += [b.doc for b in spec.behaviours if b.id not in cited]
    page, fragment = shown(pages["page"]), shown(wrapped(pages["fragment"], tmp_path))
    for doc in docs:
        for sentence in sentences(doc, members):
            assert sentence in page, sentence
            assert sentence in fragment, sentence
    for h in spec.history:
        for sentence in sentences(h.doc, members):
            assert sentence in page, sentence


def test_order_of_checks_is_in_notes(spec: Spec, pages: dict[str, Path]) -> None:
    notes = section(pages["page"].read_text(), "NOTES")
    items = [i for i, line in enumerate(notes) if line.startswith(".IP ")]
    assert len(items) == len(spec.precedence)
    for n, (i, step) in enumerate(zip(items, spec.precedence, strict=True), 1):
        assert notes[i].split()[1] == f"{n}."
        b = spec.behaviour(step.behaviour)
        latest = max(b.expect, key=lambda e: e.kernels.since)
        errno = latest.instead or latest.errno
        end = items[n] if n < len(items) else len(notes)
        assert f".RB ( {errno} )" in notes[i:end]


def test_page_layout(spec: Spec, pages: dict[str, Path]) -> None:
    text = pages["page"].read_text()
    lines = text.splitlines()
    assert lines[:4] == [r'.\" Copyright, the authors of the Linux man-pages project', r'.\"',
                         r'.\" SPDX-License-Identifier: Linux-man-pages-copyleft', r'.\"']
    assert lines[4] == f'.TH {spec.ioctl.name} 2const {spec.date} "Linux man-pages (unreleased)"'
    titles = [line[4:] for line in lines if line.startswith(".SH ")]
    assert titles == sorted(titles, key=SECTION_ORDER.index)
    for required in ("NAME", "LIBRARY", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS",
                     "STANDARDS", "HISTORY", "NOTES", "BUGS", "SEE ALSO"):
        assert required in titles
    assert section(text, "NAME") == [spec.ioctl.name, "\\-", spec.ioctl.summary]
    assert section(text, "STANDARDS") == ["Linux."]
    assert section(text, "HISTORY")[0] == f"Linux {spec.since}."
    assert not text.startswith("'\\\" t") and ".TS" not in lines


def test_synopsis_struct(spec: Spec, pages: dict[str, Path]) -> None:
    synopsis = section(pages["page"].read_text(), "SYNOPSIS")
    body = synopsis[synopsis.index(".EX") + 1 : synopsis.index(".EE")]
    assert body[0] == f".B struct {spec.struct.name} {{" and body[-1] == ".B };"
    columns = set()
    for line, f in zip(body[1:-1], spec.struct.fields, strict=True):
        assert line.startswith(".BR ")
        decl, comment = args(line)
        assert decl.split() == [f.ctype.base, f.name + ";"]
        assert comment.strip() == f"/* {f.comment} */"
        columns.add(len(decl) + len(comment) - len(comment.lstrip()))
    assert len(columns) == 1  # the comments line up
    assert f'.BR "#include <{spec.header}>"' in synopsis[1]
    assert any(spec.ioctl.name in line and spec.struct.name in line for line in synopsis if line.startswith(".BI"))


def test_errors_flags_and_tags_follow_the_model(spec: Spec, pages: dict[str, Path]) -> None:
    text = pages["page"].read_text()
    errors = section(text, "ERRORS")
    assert tags(errors) == [e.errno for e in spec.errors]
    for e in spec.errors:
        tagged = f'.BR {e.errno} " (since Linux {e.since})"'
        assert (tagged in errors) == (e.since is not None and spec.since < e.since)
    description = section(text, "DESCRIPTION")
    names = [f.name for fs in spec.flags for f in fs.values]
    assert [t for t in tags(description) if t in names] == names
    assert any(spec.feature.name in line for line in description)
    assert any(f".{spec.range_ioctl.field}" in line for line in description)


def test_see_also(spec: Spec, pages: dict[str, Path]) -> None:
    see = section(pages["page"].read_text(), "SEE ALSO")
    refs = [line for line in see if line.startswith(".BR ")]
    want = sorted(spec.see_also, key=lambda r: (int(re.match(r"\d+", r.section)[0]), r.section, r.page))
    assert refs == [f".BR {r.page} ({r.section})," for r in want[:-1]] + [f".BR {want[-1].page} ({want[-1].section})"]
    assert see[len(refs):len(refs) + 1] == [".P"]
    assert see[-1].startswith(".I ") and see[-1].replace("\\:", "").replace("\\-", "-")[3:] == spec.see_also_path


def test_roff_conventions(spec: Spec, members: set[str], pages: dict[str, Path]) -> None:
    for path in pages.values():
        nofill = False
        for line in path.read_text().splitlines():
            if line.startswith((".", "'")):
                name = line[1:].split(" ", 1)[0]
                assert name in MACROS, line  # never prose taken for a request
                nofill = {"EX": True, "nf": True, "EE": False, "fi": False}.get(name, nofill)
                if name in {"I", "IR", "RI", "BI", "IB"}:
                    first = 0 if name.startswith("I") else 1
                    for arg in args(line)[first::2]:
                        assert arg.lstrip(".") not in members or arg.startswith("."), line
                continue
            assert nofill or not line.startswith(" "), line
            assert not re.match(r"[.,;:)]", line), line  # punctuation left off its word
            assert not re.search(r"(?<![\\\w])-(\d|E[A-Z])", line), line  # a minus written as hyphen


def test_markup_of_spans(spec: Spec, tmp_path: Path) -> None:
    roff = Roff(spec, spec.date)

    def one(text: str) -> list[str]:
        return roff.line(parse(text).paragraphs[0].lines[0])

    assert one("See :man:`fork(2)`.") == ["See", ".BR fork (2)."]
    assert one("A shared mapping (**MAP_SHARED**) fails.") == ["A shared mapping", ".RB ( MAP_SHARED )", "fails."]
    assert one("The field holds \\-**EINVAL**.") == ["The field holds", ".RB \\- EINVAL ."]
    assert one("The bit **1 << _UFFDIO_MOVE** is set.") == ["The bit", '.B "1 << _UFFDIO_MOVE"', "is set."]
    assert one(f"The *{spec.struct.fields[-1].name}* field, not *argp*.") == [
        "The", f".I .{spec.struct.fields[-1].name}", "field, not", ".IR argp ."]
    assert roff.line((Text(".profile is read"),)) == ["\\&.profile is read"]
    long = " ".join(["word"] * 40) + ", and a clause that ends it."
    lines = one(long)
    assert all(len(line) <= 80 for line in lines) and " ".join(lines) == long
    # Three fonts touching: two macros joined by \c, read as one word.
    mixed = roff.line((Text("x ("), Bold("AA"), Text("/"), Italic("bb"), Text(") y")))
    page = tmp_path / "mixed.2"
    page.write_text('.TH MIXED 2 2000-01-01 "test"\n.SH NAME\nmixed \\- test\n.SH DESCRIPTION\n'
                    + "\n".join(mixed) + "\n")
    assert "x (AA/bb) y" in shown(page)
    assert manlint.lint_file(page) == []


def test_pages_lint_clean(pages: dict[str, Path], tmp_path: Path) -> None:
    for path in pages.values():
        assert manlint.lint_file(path) == []
    assert manlint.lint_file(wrapped(pages["fragment"], tmp_path)) == []


# --- determinism -----------------------------------------------------------------
def test_deterministic_and_dated_by_source_date_epoch(spec: Spec, pages: dict[str, Path],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    exe = Path(sys.executable).with_name("uffd-uabi")
    for seed in ("1", "2"):  # other processes, other hash orders
        again = tmp_path / f"again{seed}"
        subprocess.run([str(exe), "man", "--out", str(again)], check=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed})
        for path in pages.values():
            assert (again / path.relative_to(path.parents[1])).read_bytes() == path.read_bytes()
    for epoch, date in (("0", "1970-01-01"), ("1700000000", "2023-11-14")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        out = tmp_path / f"epoch{epoch}"
        assert generate(out) == 0
        for path in pages.values():
            new = (out / path.relative_to(path.parents[1])).read_text().splitlines()
            old = path.read_text().splitlines()
            changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
            if path == pages["page"]:
                assert changed == [(old[4], old[4].replace(spec.date, date))]
            else:
                assert changed == []


def test_bad_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert generate(tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()


# --- errors of use -----------------------------------------------------------------
def test_broken_spec_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = specpkg.DEFAULT_SPEC.read_text()
    block = "    - name: src\n      type: __u64\n      dir: in\n      offset: 8\n"
    assert text.count(block) == 1
    broken = text.replace(block, block.replace("offset: 8", "offset: 12"))
    with pytest.raises(specpkg.SpecError):
        specpkg.loads(broken, "broken.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    out = tmp_path / "out"
    assert main(["man", "--spec", str(path), "--out", str(out)]) == 2
    assert not out.exists()
    assert re.match(r"\S*broken\.yaml:\d+:\d+: ", capsys.readouterr().err)


def test_help() -> None:
    exe = Path(sys.executable).with_name("uffd-uabi")
    result = subprocess.run([str(exe), "man", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "--out" in result.stdout and "--into" in result.stdout and "--dry-run" in result.stdout


# --- --into the real Debian page ----------------------------------------------------
@pytest.fixture
def debian_page(tmp_path: Path) -> Path:
    if not DEBIAN_PAGE.exists():
        pytest.fail(f"{DEBIAN_PAGE} is missing: install manpages-dev (make setup does)")
    page = tmp_path / "ioctl_userfaultfd.2"
    page.write_bytes(gzip.decompress(DEBIAN_PAGE.read_bytes()))
    return page


def into(page: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    status = main(["man", "--into", str(page), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def heads(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith((".SS", ".SH"))]


def test_into_the_debian_page(spec: Spec, pages: dict[str, Path], debian_page: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    name = spec.ioctl.name
    original = debian_page.read_text()
    assert f".SS {name}" not in original
    status, diff, _ = into(debian_page, capsys)
    assert status == 0
    after = debian_page.read_text()
    # Exactly one subsection, after the last UFFDIO_* one, before the next section.
    before_heads, after_heads = heads(original), heads(after)
    assert [h for h in after_heads if h.split()[:2] == [".SS", name]] == [f".SS {name}"]
    last = max(i for i, h in enumerate(before_heads) if h.startswith(f".SS {spec.ioctl.type_name}_"))
    assert after_heads == before_heads[: last + 1] + [f".SS {name}"] + before_heads[last + 1 :]
    # The fragment went in whole and nothing else changed.
    fragment = pages["fragment"].read_text().splitlines()
    lines = after.splitlines()
    start = lines.index(f".SS {name}")
    assert lines[start : start + len(fragment)] == fragment
    rest = lines[:start] + lines[start + len(fragment) :]
    assert [line for line in rest if line != '.\\"'] == [line for line in original.splitlines() if line != '.\\"']
    # The diff printed is that change: only additions.
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    added = [line[1:] for line in body if line.startswith("+")]
    assert not [line for line in body if line.startswith("-")]
    assert len(added) == len(after.splitlines()) - len(original.splitlines())
    # Idempotent: a second run changes nothing and prints nothing.
    assert into(debian_page, capsys) == (0, "", "")
    assert debian_page.read_text() == after


def test_into_lints_as_before(spec: Spec, debian_page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = manlint.lint_file(debian_page)
    assert into(debian_page, capsys)[0] == 0
    after = manlint.lint_file(debian_page)
    lines = debian_page.read_text().splitlines()
    start = lines.index(f".SS {spec.ioctl.name}")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith((".SS", ".SH")))
    assert [f for f in after if start < f.line <= end] == []
    assert sorted((f.check, f.message) for f in after) == sorted((f.check, f.message) for f in before)


def test_into_replaces_a_stale_subsection(spec: Spec, debian_page: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    into(debian_page, capsys)
    fresh = debian_page.read_text()
    head, sep, ours = fresh.partition(f".SS {spec.ioctl.name}\n")
    first_error = f".B {spec.errors[0].errno}"
    assert sep and first_error in ours
    stale = head + f".SS {spec.ioctl.name} (Since Linux 1.0)\n" + ours.replace(first_error, ".B EOLD", 1)
    debian_page.write_text(stale)
    status, diff, _ = into(debian_page, capsys)
    assert status == 0 and "-.B EOLD" in diff and f"+{first_error}" in diff
    assert debian_page.read_text() == fresh


def test_into_dry_run_changes_nothing(debian_page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = debian_page.read_bytes()
    status, diff, _ = into(debian_page, capsys, "--dry-run")
    assert status == 0 and diff.startswith(f"--- {debian_page}\n+++ {debian_page}\n")
    assert debian_page.read_bytes() == original


def test_into_refuses_a_page_without_the_subsections(pages: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.2const"
    other.write_bytes(pages["page"].read_bytes())
    status, out, err = into(other, capsys)
    assert (status, out) == (1, "") and "not a monolithic" in err
    assert other.read_bytes() == pages["page"].read_bytes()
    status, out, err = into(DEBIAN_PAGE, capsys)  # compressed: refused, untouched
    assert (status, out) == (1, "") and "gunzip" in err
