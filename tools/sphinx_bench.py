"""Sphinx directives that put `uffd-uabi bench`'s results beside the seed's
performance claims.

The JSON the benchmark writes is an input of the build, like the spec: it
is named by the ``uabi_bench`` config value (relative to conf.py's
directory; default build/bench/bench.json) and noted as a dependency.  The
page keeps the claims in its own words; each ``uabi-bench-claim`` directive
adds the verdict the benchmark reached on the machine it ran on, and
``uabi-bench`` the figures: the plot (the SVG the JSON names, copied into
the HTML output's _static by this extension) and a table per benchmark.
Without a JSON every directive says the claims are not yet measured.

    .. uabi-bench-machine::

    .. uabi-bench-claim:: faults

       The claim, as the seed makes it.

    .. uabi-bench::
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from tools.sphinxext import ProseVisitor, model, table
from tools.sphinxext import para as _para

logger = logging.getLogger(__name__)

DEFAULT_BENCH = "build/bench/bench.json"
CSS = "uabi-bench.css"
SVG = "uabi-bench.svg"  # the plot's name in the output's _static
VERDICTS = ("confirmed", "partly confirmed", "not confirmed", "not measured")
METHODS = ("copy", "move")

STYLE = """\
/* tools/sphinx_bench.py: the benchmark's verdicts and figures. */
.uabi-bench-claim { border-left: 0.25em solid var(--color-foreground-border, #ccc); padding-left: 0.8em;
  margin: 1em 0; }
.uabi-bench-claim > blockquote { margin: 0 0 0.4em 0; font-style: italic; }
.uabi-verdict { display: inline-block; padding: 0 0.45em; border-radius: 0.3em; font-weight: bold;
  font-size: 0.85em; color: #fff; background: #6b7280; }
.uabi-verdict-confirmed { background: #15803d; }
.uabi-verdict-partly-confirmed { background: #c2410c; }
.uabi-verdict-not-confirmed { background: #b91c1c; }
.uabi-bench-where, .uabi-bench-spread { color: var(--color-foreground-muted, #666); font-size: 0.9em; }
.uabi-bench-missing { color: var(--color-foreground-muted, #666); font-style: italic; }
img.uabi-bench-plot { max-width: 100%; background: #fff; }
table.uabi-bench td, table.uabi-bench th { font-size: 0.9em; padding: 0.2em 0.5em; }
table.uabi-bench td p, table.uabi-bench th p { margin: 0; }
"""


# --- the input ------------------------------------------------------------------------

def load_bench(path: Path) -> dict[str, Any] | str | None:
    """The results, None when there are none, or what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"unreadable: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict) \
            or not isinstance(data.get("claims"), list) or not isinstance(data.get("machine"), dict):
        return "not the output of `uffd-uabi bench`: no benchmarks, claims or machine"
    return data


def svg_of(path: Path, data: dict[str, Any]) -> Path | None:
    """The plot the results name (relative to the JSON), if it is there."""
    name = data.get("svg")
    if not isinstance(name, str):
        return None
    svg = (path.parent / name).resolve()
    return svg if svg.is_file() else None


# --- node helpers -------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[nodes.Node | str]], title: str) -> nodes.table:
    return table(header, [(cells, None) for cells in rows], classes=["uabi-bench"], title=title)


def number(value: float) -> str:
    """Three significant digits, without an exponent: 14,400; 80.3; 0.0171."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def figure(s: Any, scale: float = 1.0) -> nodes.inline:
    """A median with its range: "1.23 (1.1-1.4)"."""
    if not isinstance(s, dict) or "median" not in s:
        return nodes.inline(text="-")

    def fmt(v: float) -> str:
        return number(v * scale)

    out = nodes.inline()
    out += nodes.Text(fmt(s["median"]))
    out += nodes.inline(text=f" ({fmt(s['min'])}\u2013{fmt(s['max'])})", classes=["uabi-bench-spread"])
    return out


def percent(s: Any) -> nodes.inline:
    if not isinstance(s, dict) or "median" not in s:
        return nodes.inline(text="-")
    out = nodes.inline()
    out += nodes.Text(f"{s['median']:.0%}")
    out += nodes.inline(text=f" ({s['min']:.0%}\u2013{s['max']:.0%})", classes=["uabi-bench-spread"])
    return out


def verdict_badge(verdict: str) -> nodes.inline:
    return nodes.inline(text=verdict, classes=["uabi-verdict", "uabi-verdict-" + verdict.replace(" ", "-")])


def where(data: dict[str, Any]) -> str:
    """The machine measured, as the verdicts are qualified."""
    m = data["machine"]
    text = f"Linux {m.get('release', '?')}, {m.get('cpus', '?')} CPUs"
    if m.get("cpu"):
        text += f" ({m['cpu']}{', virtual machine' if m.get('virtual') else ''})"
    text += f", {data.get('date', 'an unknown date')}, median of {data.get('repeats', '?')} repeats"
    return text + (" (--quick: sizes too small to quote)" if data.get("quick") else "")


# --- the directives ------------------------------------------------------------------------

class BenchDirective(SphinxDirective):
    """Reads the results once per directive, noted as a dependency."""

    def results(self) -> tuple[Path, dict[str, Any] | None]:
        path = Path(self.config.uabi_bench)
        self.env.note_dependency(str(path))
        data = load_bench(path)
        if isinstance(data, str):
            logger.warning("%s: %s", path, data, location=self.get_location())
            return path, None
        return path, data

    def missing(self, what: str = "Not yet measured") -> nodes.paragraph:
        return _para(f"{what}: ", nodes.literal(text="make bench"), " writes ",
                     nodes.literal(text=str(self.config.uabi_bench_name)),
                     ", and the next build shows the results here.", classes=["uabi-bench-missing"])


class MachineDirective(BenchDirective):
    """``.. uabi-bench-machine::`` -- where and when the figures were taken,
    and how busy the machine was meanwhile."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        _, data = self.results()
        if data is None:
            return [self.missing()]
        out = [_para("Measured on ", nodes.strong(text=where(data)), ".")]
        m = data["machine"]
        memory = str(m.get("memory", "?"))
        if memory.endswith(" kB") and memory[:-3].isdigit():
            memory = f"{int(memory[:-3]) / (1 << 20):.1f} GiB"
        out.append(_para(f"Memory {memory}; pages of {m.get('page_size', '?')} bytes; "
                         f"transparent huge pages {m.get('thp', '?')} (defrag {m.get('thp_defrag', '?')}); "
                         f"the run took {data.get('wall', '?')} s."))
        if data.get("pinned"):
            out.append(_para(f"The two threads of a benchmark were pinned to CPUs "
                             f"{' and '.join(str(c) for c in data['pinned'])}."))
        load = data.get("load")
        if isinstance(load, dict) and isinstance(load.get("other_cpu"), int | float):
            out.append(_para(f"Other processes used {load['other_cpu']:.0%} of the CPUs during the run "
                             f"(steal time {load.get('steal', 0):.0%}); the load average was "
                             f"{(load.get('loadavg_before') or ['?'])[0]} when it started.",
                             classes=["uabi-bench-where"]))
        if isinstance(load, dict) and load.get("reported_kib") is not None:
            out.append(_para(f"The kernel reports free memory to its host (free page reporting, blocks of order "
                             f"{m.get('page_reporting_order', '?')}): {load['reported_kib'] / 1024:,.0f} MiB were "
                             "handed back during the run, and allocating them again costs the host a fault each.",
                             classes=["uabi-bench-where"]))
        return out


class ClaimDirective(BenchDirective):
    """``.. uabi-bench-claim:: ID``: the claim as the spec words it, then the
    verdict on the machine measured and the figures behind it."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        claim_id = self.arguments[0]
        box = nodes.container(classes=["uabi-bench-claim"], ids=[f"claim-{claim_id}"])
        spec = model(self.env.config)
        worded = [c for c in spec.claims if c.id == claim_id]
        if not worded:
            logger.warning("the spec has no claim %r", claim_id, location=self.get_location())
            return [box]
        self.env.note_dependency(self.env.config.uabi_spec)
        quote = nodes.block_quote()
        quote.extend(ProseVisitor(spec.values(), self.env.config.manpages_url or None).visit(worded[0].doc))
        box += quote
        _, data = self.results()
        if data is None:
            box += _para(verdict_badge("not measured"), " ", self.missing("Not yet measured"))
            return [box]
        found = [c for c in data["claims"] if isinstance(c, dict) and c.get("id") == claim_id]
        if not found:
            logger.warning("the benchmark results have no claim %r", claim_id, location=self.get_location())
            box += _para(verdict_badge("not measured"), " The results say nothing about this claim.")
            return [box]
        claim = found[0]
        verdict = claim.get("verdict") if claim.get("verdict") in VERDICTS else "not measured"
        box += _para(verdict_badge(verdict), " ", str(claim.get("finding", "")))
        box += _para(where(data), classes=["uabi-bench-where"])
        return [box]


class FiguresDirective(BenchDirective):
    """``.. uabi-bench::`` -- the plot and one table per benchmark."""

    has_content = False
    option_spec = {"no-plot": directives.flag}

    def run(self) -> list[nodes.Node]:
        path, data = self.results()
        if data is None:
            return [self.missing()]
        out: list[nodes.Node] = []
        svg = svg_of(path, data)
        if svg is not None and "no-plot" not in self.options:
            self.env.note_dependency(str(svg))
            depth = self.env.docname.count("/")
            out.append(nodes.raw("", f'<img class="uabi-bench-plot" src="{"../" * depth}_static/{SVG}" '
                                     f'alt="The benchmark\'s figures, plotted">', format="html"))
        names = data.get("names") or {m: m for m in METHODS}
        bench = data["benchmarks"]
        for name, render in (("faults", self.faults), ("compaction", self.compaction),
                             ("percall", self.percall), ("swap", self.swap), ("harness", self.harness)):
            result = bench.get(name)
            if not isinstance(result, dict):
                continue
            if "unavailable" in result:
                out.append(_para(f"{name}: not measured: {result['unavailable']}", classes=["uabi-bench-missing"]))
                continue
            try:
                out += render(result, names)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("%s: the %s results are incomplete (%s)", path, name, exc,
                               location=self.get_location())
        return out

    @staticmethod
    def faults(r: dict[str, Any], names: dict[str, str]) -> list[nodes.Node]:
        rows = [[names[m], figure(r[m]["pages_per_second"], 1e-3), figure(r[m]["ns_per_fault"], 1e-3),
                 figure(r[m]["faults"]), figure(r[m].get("shootdowns"))] for m in METHODS]
        rows.append([f"{names['copy']} / {names['move']}", figure(r["ratio"]), "", "", ""])
        return [_table(("", "thousand faults per second", "\u00b5s per fault", "fault messages", "TLB shootdowns"),
                       rows,
                       f"Missing faults resolved: {r['pages']} pages, one fault each")]

    @staticmethod
    def compaction(r: dict[str, Any], names: dict[str, str]) -> list[nodes.Node]:
        rows: list[list[nodes.Node | str]] = []
        for label, part in (("", r), (" alone", r.get("alone"))):
            if not isinstance(part, dict):
                continue
            rows += [[names[m] + label, figure(part[m]["ns"], 1e-6), figure(part[m]["release_ns"], 1e-6),
                      figure(part[m].get("mutator_ns"), 1e-6), figure(part[m]["faults"]), figure(part[m]["fresh"]),
                      figure(part[m].get("shootdowns"))]
                     for m in METHODS]
            rows.append([f"{names['move']}{label}: time saved", percent(part["reduction"]), "", "", "", "", ""])
        return [_table(("", "compactor, ms", "of which MADV_DONTNEED, ms", "mutator, ms", "faults",
                        "pages allocated", "TLB shootdowns"), rows,
                       f"Compaction: {r['heap_pages']} pages of {r['object_size']}-byte objects, "
                       f"{r['live']:.0%} live, into {r['compacted_pages']} pages")]

    @staticmethod
    def percall(r: dict[str, Any], names: dict[str, str]) -> list[nodes.Node]:
        rows: list[list[nodes.Node | str]] = [
            [str(p["per_call"]), *(figure(p[m]["ns_per_page"]) for m in METHODS),
             *(figure(p[m]["ns_per_call"], 1e-3) for m in METHODS)] for p in r["points"]]
        thp = r.get("thp", {})
        if "ns_per_page" in thp:
            rows.append([f"{thp['per_call']} (one huge page, {', '.join(thp['huge_after'])})", "-",
                         figure(thp["ns_per_page"]), "-", figure(thp["ns_per_call"], 1e-3)])
        header = ("pages per call", *(f"{names[m]}, ns per page" for m in METHODS),
                  *(f"{names[m]}, \u00b5s per call" for m in METHODS))
        out: list[nodes.Node] = [_table(header, rows, f"The cost per call: {r['pages']} pages a pass")]
        fit = r.get("fit", {})
        if fit:
            out.append(_para("As a fixed cost per call plus a cost per page (least squares on the medians): " + "; ".join(
                f"{names[m]} {number(fit[m]['per_call_ns'])} ns per call + {number(fit[m]['per_page_ns'])} ns per page"
                for m in METHODS if m in fit) + "."))
        knee = r.get("knee", {})
        if knee:
            out.append(_para("Within 10% of the cost per page at the most pages per call from: " + ", ".join(
                f"{names[m]} {knee[m]} pages per call" for m in METHODS if m in knee) + "."))
        if "unavailable" in thp:
            out.append(_para(f"Huge pages: not measured: {thp['unavailable']}", classes=["uabi-bench-missing"]))
        return out

    @staticmethod
    def swap(r: dict[str, Any], names: dict[str, str]) -> list[nodes.Node]:
        rows = [[label, figure(r[how]["ns_per_page"]), "yes" if r[how]["stayed_swapped"] else "no",
                 str(r[how]["pswpin"]), f"{r[how]['vmas_before']} \u2192 {r[how]['vmas_moved_out']}"]
                for how, label in (("move", names["move"]), ("mremap", "mremap(2)"))]
        return [_table(("", "ns per page", "stayed swapped out", "pages read back (pswpin)",
                        "VMAs of the source"), rows, f"Moving {r['pages']} swapped-out pages")]

    @staticmethod
    def harness(r: dict[str, Any], names: dict[str, str]) -> list[nodes.Node]:
        rows = [[f"{names[m]}, {row['per_call']} per call", figure(row[m]["bare"]), figure(row[m].get("cffi"))]
                for row in r["side_by_side"] for m in METHODS]
        out: list[nodes.Node] = [_table(("ns per page", "bare C program", "through cffi"), rows,
                                        "The harness against a bare C loop")]
        out.append(_para("A call from Python into C costs ", figure(r["cffi_call_ns"]), " ns, a clock reading ",
                         figure(r["clock_ns"]), " ns"
                         + ("; Python's time around a timed pass exceeds the loop's own by " if "wall_minus_c_ns" in r
                            else ""),
                         *([figure(r["wall_minus_c_ns"], 1e-3), " \u00b5s"] if "wall_minus_c_ns" in r else []),
                         "."))
        return out


# --- events --------------------------------------------------------------------------------

def on_config_inited(app: Sphinx, config: Config) -> None:
    config.uabi_bench_name = config.uabi_bench or DEFAULT_BENCH
    config.uabi_bench = str((Path(app.confdir) / config.uabi_bench_name).resolve())


def on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    """Write the style sheet and copy the plot into the output's _static."""
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    (static / CSS).write_text(STYLE)
    path = Path(app.config.uabi_bench)
    data = load_bench(path)
    svg = svg_of(path, data) if isinstance(data, dict) else None
    if svg is not None:
        shutil.copyfile(svg, static / SVG)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("uabi_bench", DEFAULT_BENCH, "env", str)
    app.add_config_value("uabi_bench_name", DEFAULT_BENCH, "env", str)
    app.connect("config-inited", on_config_inited)
    app.connect("build-finished", on_build_finished)
    app.add_directive("uabi-bench", FiguresDirective)
    app.add_directive("uabi-bench-claim", ClaimDirective)
    app.add_directive("uabi-bench-machine", MachineDirective)
    app.add_css_file(CSS)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
