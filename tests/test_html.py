"""The HTML documentation: a real Sphinx build (-W -n) of docs/ through the
project's extension.  What readers and other tools rely on: the build
succeeds, every behaviour has its id as an HTML anchor, the tables carry
the model's numbers, the conformance status sits beside its behaviour, and
a broken spec stops the command before Sphinx with FILE:LINE:COL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Tag

import spec
from tools.cli import main

SPEC = spec.load()
# One behaviour fails in the results file, another passes; the rest have no record.
FAILED = SPEC.behaviours[len(SPEC.behaviours) // 2].id
PASSED = SPEC.behaviours[0].id
RELEASE = "6.18.44-test"
DATE = "2026-11-28T10:00:00+00:00"


def build(out: Path, *extra: str) -> int:
    return main(["html", "--out", str(out), *extra])


def page(out: Path, name: str) -> BeautifulSoup:
    return BeautifulSoup((out / name).read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build with a results file: a FAIL, a PASS, keys the format may gain,
    and an id the spec does not have."""
    tmp = tmp_path_factory.mktemp("html")
    results = tmp / "results.json"
    results.write_text(json.dumps({
        "kernel": {"release": RELEASE, "machine": "x86_64"}, "date": DATE, "runner": "future key",
        "results": [
            {"id": FAILED, "status": "FAIL", "expected": "errno=EEXIST", "observed": "errno=EAGAIN",
             "reason": "the errno differs", "duration": 0.5, "group": "future key"},
            {"id": PASSED, "status": "PASS", "expected": "", "observed": "", "reason": "", "duration": 0.1},
            {"id": "no.such.behaviour", "status": "PASS"},
        ],
    }))
    out = tmp / "out"
    assert build(out, "--results", str(results)) == 0
    return out


@pytest.fixture(scope="module")
def ioctl_page(site: Path) -> BeautifulSoup:
    return page(site, "ioctl.html")


def test_every_page_is_built(site: Path) -> None:
    for name in ("index.html", "ioctl.html", "conformance.html", "spec-format.html", "project.html"):
        assert (site / name).is_file(), name


def test_every_behaviour_id_is_an_anchor_verbatim(site: Path) -> None:
    html = (site / "ioctl.html").read_text(encoding="utf-8")
    for b in SPEC.behaviours:
        assert f'id="{b.id}"' in html, b.id


def test_each_behaviour_section_shows_its_summary_and_every_kernel_range(ioctl_page: BeautifulSoup) -> None:
    for b in SPEC.behaviours:
        section = ioctl_page.find(id=b.id)
        assert isinstance(section, Tag), b.id
        text = section.get_text(" ")
        assert b.summary in text, b.id
        assert b.source in text, b.id
        for req in b.requires:
            assert req in text, (b.id, req)
        if b.unobservable:
            assert " ".join(b.unobservable.split()) in " ".join(text.split()), b.id
        table = section.find("table", class_="uabi-expect")
        assert isinstance(table, Tag), b.id
        kernels = [row.find("td").get_text(" ").strip() for row in table.find("tbody").find_all("tr")]
        assert kernels == [str(e.kernels) for e in b.expect], b.id


def _table_rows(table: Tag) -> list[dict[str, str]]:
    headers = [th.get_text(" ").strip() for th in table.find("thead").find_all("th")]
    return [dict(zip(headers, (td.get_text(" ").strip() for td in tr.find_all("td")), strict=True))
            for tr in table.find("tbody").find_all("tr")]


@pytest.mark.parametrize("struct", SPEC.structs, ids=[s.name for s in SPEC.structs])
def test_struct_tables_carry_the_model_layout(ioctl_page: BeautifulSoup, struct: spec.model.Struct) -> None:
    anchor = ioctl_page.find(id=f"struct-{struct.name}")
    assert isinstance(anchor, Tag)
    table = anchor if anchor.name == "table" else anchor.find("table")
    rows = _table_rows(table)
    got = [(r["Field"], int(r["Offset"]), int(r["Size"]), r["C type"].replace(" ", "")) for r in rows]
    want = [(f.name, f.offset, f.size, f.ctype.name.replace(" ", "")) for f in struct.fields]
    assert got == want


def test_synopsis_and_names_come_from_the_model(ioctl_page: BeautifulSoup) -> None:
    text = " ".join(ioctl_page.find("article").get_text(" ").split())
    assert " ".join(SPEC.ioctl.macro.split()) in text
    assert f"{SPEC.ioctl.request:#x}" in text
    for fs in SPEC.flags:
        for f in fs.values:
            assert f.name in text and f"{f.value:#x}" in text, f.name
    assert SPEC.feature.name in text and f"{SPEC.feature.value:#x}" in text
    assert f"{SPEC.range_ioctl.value:#x}" in text
    for f in SPEC.struct.fields:
        assert f.name in text
    for name in SPEC.values():
        assert name in text, name
    for c in SPEC.constants:
        assert f"{c.value:#x}" in text, c.name


def test_flags_table_rows(ioctl_page: BeautifulSoup) -> None:
    for fs in SPEC.flags:
        table = ioctl_page.find("table", class_="uabi-flags")
        rows = _table_rows(table)
        assert [(r["Flag"], int(r["Bit"]), int(r["Value"], 16)) for r in rows] == \
            [(f.name, f.bit, f.value) for f in fs.values]


def test_errors_in_spec_order_with_links_to_their_behaviours(ioctl_page: BeautifulSoup) -> None:
    terms = ioctl_page.select("dl.uabi-errors > dt")
    assert [t.find("strong").get_text() for t in terms] == [e.errno for e in SPEC.errors]
    for term, error in zip(terms, SPEC.errors, strict=True):
        if error.since:
            assert str(error.since) in term.get_text(), error.errno
        links = [a["href"] for a in term.find_next_sibling("dd").select("a[href]")]
        for id_ in error.behaviours:
            assert f"#{id_}" in links, (error.errno, id_)


def test_order_of_checks_links_each_step_in_order(ioctl_page: BeautifulSoup) -> None:
    table = ioctl_page.find("table", class_="uabi-precedence")
    rows = table.find("tbody").find_all("tr")
    assert [r.find("a")["href"] for r in rows] == [f"#{s.behaviour}" for s in SPEC.precedence]


def test_internal_links_all_land_on_an_anchor(site: Path) -> None:
    pages = {p.name: page(site, p.name) for p in site.glob("*.html")}
    ids_by_page = {name: {t["id"] for t in doc.find_all(id=True)} for name, doc in pages.items()}
    for name, doc in pages.items():
        for a in doc.select("article a[href]"):
            href = a["href"]
            if href.startswith(("http:", "https:", "mailto:")) or "#" not in href:
                continue
            target, _, fragment = href.partition("#")
            assert fragment in ids_by_page[target or name], (name, href)


def test_failed_status_sits_beside_its_behaviour(ioctl_page: BeautifulSoup) -> None:
    section = ioctl_page.find(id=FAILED)
    badges = section.select(".uabi-status")
    assert [b.get_text() for b in badges] == ["FAIL"]
    text = section.get_text(" ")
    assert RELEASE in text and DATE in text
    assert "the errno differs" in text
    passed = ioctl_page.find(id=PASSED)
    assert [b.get_text() for b in passed.select(".uabi-status")] == ["PASS"]
    for b in SPEC.behaviours:
        if b.id not in (FAILED, PASSED):
            assert not ioctl_page.find(id=b.id).select(".uabi-status"), b.id


def test_results_page_lists_every_behaviour_with_its_status(site: Path) -> None:
    rows = page(site, "conformance.html").select("table.uabi-results tbody tr")
    status = {r.find("a")["href"].partition("#")[2]: [b.get_text() for b in r.select(".uabi-status")]
              for r in rows}
    assert set(status) == {b.id for b in SPEC.behaviours}
    assert status[FAILED] == ["FAIL"] and status[PASSED] == ["PASS"]
    assert sum(len(s) for s in status.values()) == 2


def test_without_results_every_behaviour_says_not_yet_checked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build(out, "--results", str(tmp_path / "absent.json")) == 0
    doc = page(out, "ioctl.html")
    for b in SPEC.behaviours:
        section = doc.find(id=b.id)
        assert "not yet checked on this build" in section.get_text(" "), b.id
        assert not section.select(".uabi-status")


def test_a_failed_build_leaves_the_previous_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unreadable results are a warning, so -W fails the build."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.html").write_text("kept")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    assert build(out, "--results", str(bad)) == 1
    assert sorted(p.name for p in out.iterdir()) == ["previous.html"]
    assert set(tmp_path.iterdir()) == {out, bad}  # no build directory left behind
    assert "results" in capsys.readouterr().err


def test_broken_spec_exits_2_before_sphinx_with_no_output(tmp_path: Path) -> None:
    text = spec.DEFAULT_SPEC.read_text()
    pos = text.index("  size: ")  # the subject struct's size, made a string
    broken = text[:pos] + "  size: forty\n" + text[text.index("\n", pos) + 1:]
    bad = tmp_path / "bad.yaml"
    bad.write_text(broken)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "html", "--spec", str(bad), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = re.fullmatch(r"bad\.yaml:(\d+):(\d+): .+", lines[0])
    assert m, lines[0]
    assert int(m.group(1)) == broken.count("\n", 0, pos) + 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
