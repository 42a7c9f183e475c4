"""`uffd-uabi bench` at tiny sizes, through the real command on the real
kernel: every benchmark runs, its figures are sane (positive, consistent
with each other, the moved data intact), the verdicts follow the rules
docs/bench.rst states, the run leaves the machine's swap as it was, and the
HTML page renders the results (or says they are not yet measured).  No
assertion is about how fast anything is."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import spec
from conformance import bindings
from tools import bench, benchloops

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).parent / "uffd-uabi"), "bench"]
SPEC = spec.load()
KERNEL = spec.Version.parse(os.uname().release)
SIZES = bench.QUICK
REPEATS = 2


def swaps() -> list[str]:
    return Path("/proc/swaps").read_text().splitlines()[1:]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of every benchmark (swap allowed), and what it left."""
    if SPEC.feature.since > KERNEL:
        pytest.skip(f"Linux {KERNEL} predates {SPEC.ioctl.name}")
    out = tmp_path_factory.mktemp("bench")
    before = swaps()
    done = subprocess.run([*CLI, "--quick", "--repeats", str(REPEATS), "--with", "swap",
                           "--json", str(out / "bench.json"), "--svg", str(out / "plot.svg")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return {"data": json.loads((out / "bench.json").read_text()), "dir": out, "swaps_before": before,
            "swaps_after": swaps(), "stdout": done.stdout}


# Figures that may be zero or negative: counts, and the time MOVE saves.
NOT_TIMES = ("faults", "fresh", "reduction", "shootdowns")


def medians_positive(node: Any) -> None:
    """Every time, rate and ratio (a dict with a median) in the tree is
    positive, and its quartiles are in order."""
    if isinstance(node, dict):
        if "median" in node and "samples" in node:
            assert node["median"] > 0 and node["min"] > 0, node
            assert node["min"] <= node["q1"] <= node["median"] <= node["q3"] <= node["max"]
            assert node["n"] == len(node["samples"])
        for key, value in node.items():
            if key not in NOT_TIMES:
                medians_positive(value)
    elif isinstance(node, list):
        for value in node:
            medians_positive(value)


# --- the loops' build -----------------------------------------------------------------

def test_the_loops_are_compiled_with_the_models_numbers() -> None:
    loops = benchloops.load(SPEC)
    assert {name: getattr(loops.lib, name) for name in SPEC.values()} == SPEC.values()
    assert loops.ffi.sizeof(f"struct {SPEC.struct.name}") == SPEC.struct.size


def test_the_loops_are_a_module_of_their_own() -> None:
    """The extra C gets its own cached module; the plain bindings lack it."""
    plain = bindings.load(SPEC)
    loops = benchloops.load(SPEC)
    assert plain is not loops
    assert bindings.build_dir(SPEC, benchloops.extra()) != bindings.build_dir(SPEC)
    assert not hasattr(plain.lib, "bench_percall") and hasattr(loops.lib, "bench_percall")
    assert "bench_percall" not in bindings.c_source(SPEC)


# --- the run ----------------------------------------------------------------------------

def test_every_benchmark_ran_and_its_figures_are_sane(run: dict[str, Any]) -> None:
    data = run["data"]
    assert data["quick"] is True and data["repeats"] == REPEATS
    assert set(data["benchmarks"]) == set(bench.BENCHMARKS)
    for name, result in data["benchmarks"].items():
        assert "unavailable" not in result, f"{name}: {result.get('unavailable')}"
    medians_positive(data["benchmarks"])
    assert data["names"] == {"copy": bench.COPY_IOCTL, "move": SPEC.ioctl.name}
    assert data["machine"]["release"] == os.uname().release


def test_every_fault_was_resolved_with_the_right_page(run: dict[str, Any]) -> None:
    faults = run["data"]["benchmarks"]["faults"]
    for m in bench.METHODS:
        assert len(faults[m]["runs"]) == REPEATS
        for r in faults[m]["runs"]:
            assert r["pages"] == SIZES.fault_pages and r["bad"] == 0
            assert r["faults"] >= SIZES.fault_pages and r["calls"] >= SIZES.fault_pages
    rate = {m: [r["pages"] / r["ns"] for r in faults[m]["runs"]] for m in bench.METHODS}
    paired = [c / m for c, m in zip(rate["copy"], rate["move"], strict=True)]
    assert faults["ratio"]["median"] == pytest.approx(statistics.median(paired))


def test_the_heap_was_compacted_intact(run: dict[str, Any]) -> None:
    comp = run["data"]["benchmarks"]["compaction"]
    used = comp["compacted_pages"]
    assert 0 < used < comp["heap_pages"]
    for m in bench.METHODS:
        for r in comp[m]["runs"]:
            assert r["pages"] == used and r["bad"] == 0  # the mutator and the final check saw every object
            assert r["release_ns"] < r["ns"]
    assert all(r["fresh"] == 0 for r in comp["copy"]["runs"])  # COPY never recycles
    assert all(r["fresh"] < used for r in comp["move"]["runs"])  # MOVE recycles most pages
    ns = {m: [r["ns"] for r in comp[m]["runs"]] for m in bench.METHODS}
    assert comp["reduction"]["median"] == pytest.approx(
        statistics.median(1 - mv / cp for mv, cp in zip(ns["move"], ns["copy"], strict=True)))


def test_the_cost_per_call_covers_every_size(run: dict[str, Any]) -> None:
    percall = run["data"]["benchmarks"]["percall"]
    assert [p["per_call"] for p in percall["points"]] == list(SIZES.per_call)
    for p in percall["points"]:
        for m in bench.METHODS:
            per_page, per_call = p[m]["ns_per_page"]["median"], p[m]["ns_per_call"]["median"]
            assert per_call == pytest.approx(per_page * p["per_call"])  # the pass divides evenly
    assert set(percall["knee"].values()) <= set(SIZES.per_call)


def test_a_whole_huge_page_moves_as_the_spec_says(run: dict[str, Any]) -> None:
    thp = run["data"]["benchmarks"]["percall"]["thp"]
    if "unavailable" in thp:
        pytest.skip(thp["unavailable"])
    expect = SPEC.behaviour("move.thp.whole").expectation_for(KERNEL)
    assert expect is not None
    assert thp["huge_after"] == [expect.huge]
    assert thp["per_call"] * run["data"]["machine"]["page_size"] == thp["thp_size"]


def test_swapped_out_pages_move_as_the_spec_says(run: dict[str, Any]) -> None:
    swap = run["data"]["benchmarks"]["swap"]
    expect = SPEC.behaviour("move.swap").expectation_for(KERNEL)
    assert expect is not None
    assert swap["move"]["stayed_swapped"] is (expect.swap == "kept")
    assert swap["move"]["vmas_moved_out"] == swap["move"]["vmas_before"] == 1
    assert swap["mremap"]["stayed_swapped"] is True


def test_the_harness_is_shown_beside_the_bare_program(run: dict[str, Any]) -> None:
    harness = run["data"]["benchmarks"]["harness"]
    assert {row["per_call"] for row in harness["side_by_side"]} == {SIZES.per_call[0], SIZES.per_call[-1]}
    for row in harness["side_by_side"]:
        for m in bench.METHODS:
            assert row[m]["bare"]["n"] == REPEATS and row[m]["cffi"]["n"] == REPEATS


def test_the_verdicts_follow_the_documented_rules(run: dict[str, Any]) -> None:
    data = run["data"]
    claims = {c["id"]: c for c in data["claims"]}
    assert set(claims) == {c.id for c in spec.load().claims}
    ratio = data["benchmarks"]["faults"]["ratio"]
    faster = ratio["q1"] > 1
    about_20 = 0.10 <= ratio["median"] - 1 <= 0.30
    assert claims["faults"]["verdict"] == ("confirmed" if faster and about_20 else
                                           "partly confirmed" if faster else "not confirmed")
    cut = data["benchmarks"]["compaction"]["reduction"]
    assert claims["compaction"]["verdict"] == ("confirmed" if cut["q1"] > 0 and cut["median"] >= 0.40 else
                                               "partly confirmed" if cut["q1"] > 0 else "not confirmed")
    swap = data["benchmarks"]["swap"]
    mv = swap["move"]
    clean = mv["stayed_swapped"] and mv["pswpin"] == 0 and mv["vmas_moved_out"] == mv["vmas_before"]
    splits = swap["mremap"]["vmas_moved_out"] > swap["mremap"]["vmas_before"]
    assert claims["swap"]["verdict"] == ("confirmed" if clean and splits else
                                         "partly confirmed" if clean else "not confirmed")
    for c in claims.values():
        assert c["finding"]


def test_the_plot_is_an_svg(run: dict[str, Any]) -> None:
    root = ET.parse(run["dir"] / "plot.svg").getroot()
    assert root.tag.endswith("svg")
    assert run["data"]["svg"] == "plot.svg"  # relative to the JSON, for the docs


def test_the_machines_swap_is_left_as_it_was(run: dict[str, Any]) -> None:
    assert run["swaps_after"] == run["swaps_before"]
    assert not list(Path("/tmp").glob("uffd-uabi-swap.*"))


# --- the HTML page -------------------------------------------------------------------------

def build_page(tmp: Path, results: Path) -> tuple[bool, Path, str]:
    """docs/bench.rst alone, built by Sphinx with both extensions (-W)."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "docs" / "bench.rst", src / "index.rst")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "extensions = ['tools.sphinxext', 'tools.sphinx_bench']\n"
        "smartquotes = False\n"  # as the project's conf.py: the spec's text as written
        f"uabi_spec = {str(ROOT / 'spec' / 'uffdio_move.yaml')!r}\n"
        f"uabi_results = {str(tmp / 'no-results.json')!r}\n"
        f"uabi_bench = {str(results)!r}\n")
    warnings = tmp / "warnings.txt"
    with warnings.open("w") as log, patch_docutils(src), docutils_namespace():
        app = Sphinx(src, src, tmp / "html", tmp / "doctrees", "html", status=None, warning=log,
                     freshenv=True, warningiserror=True)
        try:
            app.build()
            ok = app.statuscode == 0
        except Exception:  # noqa: BLE001 - a warning turned error: the build failed
            ok = False
    return ok, tmp / "html", warnings.read_text()


def claim_boxes(html: Path) -> dict[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((html / "index.html").read_text(), "html.parser")
    return {box["id"].removeprefix("claim-"): box.get_text(" ", strip=True)
            for box in soup.select("div.uabi-bench-claim")}


def test_the_page_shows_each_verdict_and_the_plot(run: dict[str, Any], tmp_path: Path) -> None:
    ok, html, warnings = build_page(tmp_path, run["dir"] / "bench.json")
    assert ok, warnings
    boxes = claim_boxes(html)
    assert set(boxes) == {c["id"] for c in run["data"]["claims"]}
    for worded in spec.load().claims:  # the claim in the spec's words
        for sentence in worded.doc.plain().split("\n"):
            assert "".join(sentence.split()) in "".join(boxes[worded.id].split()), sentence
    for c in run["data"]["claims"]:
        assert c["verdict"] in boxes[c["id"]]
        assert c["finding"] in boxes[c["id"]]
        assert run["data"]["machine"]["release"] in boxes[c["id"]]
    copied = html / "_static" / "uabi-bench.svg"
    assert copied.read_bytes() == (run["dir"] / "plot.svg").read_bytes()
    assert 'src="_static/uabi-bench.svg"' in (html / "index.html").read_text()


def test_the_page_says_not_yet_measured_without_results(tmp_path: Path) -> None:
    ok, html, warnings = build_page(tmp_path, tmp_path / "absent.json")
    assert ok, warnings
    boxes = claim_boxes(html)
    assert set(boxes) == {"faults", "compaction", "swap"}
    assert all("not measured" in text and "Not yet measured" in text for text in boxes.values())
    assert not (html / "_static" / "uabi-bench.svg").exists()


def test_unreadable_results_fail_the_build(tmp_path: Path) -> None:
    broken = tmp_path / "bench.json"
    broken.write_text("{not json")
    ok, _, warnings = build_page(tmp_path, broken)
    assert not ok
    assert "bench.json" in warnings


def test_a_bad_repeat_count_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "--quick", "--repeats", "0", "--json", str(tmp_path / "b.json"),
                           "--svg", str(tmp_path / "b.svg")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert "--repeats" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
