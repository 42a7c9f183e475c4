"""The ``uabi-matrix`` directive: the kernel matrix (``uffd-uabi matrix``) as
a page, from its JSON.

One grid, behaviours down and kernels across, each cell coloured by status
with its reason; beside each behaviour the kernel versions where the spec
says it changes and where the matrix saw it change; then the kernels (where
each came from, how long it took, its verdict) and the findings of the
version check.  The JSON is an input of the build like the spec: named by
the ``uabi_matrix`` config value (relative to conf.py's directory; default
build/matrix/matrix.json) and noted as a dependency, so a new run rebuilds
the page.  Without it the page says the matrix has not been run yet.

Behaviour ids link to their section of the reference through the ``uabi``
domain of tools/sphinxext.py when that extension is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from conformance.judge import SEVERITY, Status
from tools.sphinxext import para

logger = logging.getLogger(__name__)

DEFAULT_MATRIX = "build/matrix/matrix.json"
CSS = "uabi-matrix.css"
STATUSES = tuple(Status)

STYLE = """\
/* tools/sphinx_matrix.py: the kernel matrix grid. */
table.uabi-matrix td, table.uabi-matrix th { font-size: 0.8em; vertical-align: top; padding: 0.2em 0.4em; }
table.uabi-matrix td p, table.uabi-matrix th p { margin: 0; }
table.uabi-matrix td.uabi-matrix-cell { min-width: 5em; }
td.uabi-matrix-PASS { background: rgba(21, 128, 61, 0.14); }
td.uabi-matrix-FAIL, td.uabi-matrix-ERROR { background: rgba(185, 28, 28, 0.18); }
td.uabi-matrix-TIMEOUT { background: rgba(194, 65, 12, 0.18); }
td.uabi-matrix-XFAIL { background: rgba(124, 58, 237, 0.14); }
td.uabi-matrix-SKIP { background: rgba(107, 114, 128, 0.12); }
.uabi-matrix-reason { display: block; font-size: 0.9em; color: var(--color-foreground-secondary, #555); }
.uabi-matrix-change { display: block; white-space: nowrap; }
"""


def load_matrix(path: Path) -> dict[str, Any] | str | None:
    """The matrix, None when it has not been run, or what is wrong with the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), list):
        return "not a matrix: no list of kernels"
    return data


def cell_of(kernel: dict[str, Any], behaviour: str) -> dict[str, Any] | None:
    found = [r for r in kernel.get("results", []) if r.get("id") == behaviour]
    if not found:
        return None
    return max(found, key=lambda r: SEVERITY.index(r["status"]) if r.get("status") in SEVERITY else 0)


def cell_reason(result: dict[str, Any]) -> str:
    if result["status"] == "FAIL" and result.get("expected"):
        text = f"expected {result['expected']}, observed {result.get('observed', '')}"
        return text + (f" ({result['reason']})" if result.get("reason") else "")
    return result.get("reason") or ""


def ids_of(data: dict[str, Any]) -> list[str]:
    ids = [b["id"] for b in data.get("behaviours", [])]
    extra = [r["id"] for k in data["kernels"] for r in k.get("results", []) if r["id"] not in ids]
    return ids + list(dict.fromkeys(extra))


def _table(header: Sequence[nodes.Node | str], rows: Sequence[Sequence[nodes.entry]],
           classes: Sequence[str] = ()) -> nodes.table:
    tbl = nodes.table(classes=["colwidths-auto", *classes])
    group = nodes.tgroup(cols=len(header))
    tbl += group
    for _ in header:
        group += nodes.colspec()
    head = nodes.thead()
    hrow = nodes.row()
    for h in header:
        hrow += nodes.entry("", para(h))
    head += hrow
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            row += cell
        body += row
    group += body
    return tbl


def _entry(*children: nodes.Node | str, classes: Sequence[str] = ()) -> nodes.entry:
    return nodes.entry("", para(*children), classes=list(classes))


def _seconds(value: Any) -> str:
    return f"{value:g} s" if isinstance(value, int | float) and value else "-"


class MatrixDirective(SphinxDirective):
    """``.. uabi-matrix::`` -- the whole matrix: grid, kernels, findings."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        path = Path(self.config.uabi_matrix)
        self.env.note_dependency(str(path))
        data = load_matrix(path)
        if data is None:
            return [para("Not yet run: ", nodes.literal(text="make matrix"), " writes ",
                          nodes.literal(text=str(self.config.uabi_matrix_name)),
                          ", and the next build shows it here.", classes=["uabi-unchecked"])]
        if isinstance(data, str):
            logger.warning("%s: %s", path, data, location=self.get_location())
            return [para(f"The matrix file is {data}.", classes=["uabi-unchecked"])]
        kernels = data["kernels"]
        out: list[nodes.Node] = [para(
            f"Run on {data.get('date', '?')} against the spec of {data.get('spec', {}).get('date', '?')}, "
            f"{len(kernels)} kernels in {_seconds(data.get('wall'))}.")]
        out.append(self.grid(data))
        out.append(self.kernels(kernels))
        out += self.findings(data.get("findings", []))
        return out

    def behaviour_ref(self, behaviour: str) -> nodes.Node:
        literal = nodes.literal(text=behaviour)
        if "uabi" not in self.env.domains:
            return literal
        ref = addnodes.pending_xref("", refdomain="uabi", reftype="behaviour", reftarget=behaviour,
                                    refexplicit=True, refwarn=False)
        ref += literal
        return ref

    def grid(self, data: dict[str, Any]) -> nodes.table:
        kernels = data["kernels"]
        changes = {b["id"]: b for b in data.get("behaviours", [])}
        rows = []
        for behaviour in ids_of(data):
            row = [_entry(self.behaviour_ref(behaviour))]
            for k in kernels:
                result = cell_of(k, behaviour)
                if result is None:
                    row.append(_entry("-" if k.get("results") else "not run"))
                    continue
                status = result["status"]
                badge = nodes.inline(text=status, classes=["uabi-status", f"uabi-status-{status.lower()}"])
                reason = cell_reason(result)
                parts: list[nodes.Node | str] = [badge]
                if reason:
                    parts.append(nodes.inline(text=reason, classes=["uabi-matrix-reason"]))
                row.append(_entry(*parts, classes=["uabi-matrix-cell", f"uabi-matrix-{status}"]))
            row.append(self.changes_entry(changes.get(behaviour, {})))
            rows.append(row)
        header: list[nodes.Node | str] = ["Behaviour"]
        for k in kernels:
            header.append(para(nodes.strong(text=k["label"]), nodes.inline(text=k["release"],
                                                                              classes=["uabi-matrix-reason"])))
        header.append("Changes")
        return _table(header, rows, classes=["uabi-matrix"])

    @staticmethod
    def changes_entry(b: dict[str, Any]) -> nodes.entry:
        parts: list[nodes.Node | str] = []
        for v in b.get("changes", []):
            parts.append(nodes.inline(text=f"spec: Linux {v}", classes=["uabi-matrix-change"]))
        for c in b.get("observed_changes", []):
            where = f"seen: {c['after']} \u2192 {c['before']}"
            where += f" (spec {', '.join(c['spec'])})" if c.get("spec") else " (not in the spec)"
            parts.append(nodes.inline(text=where, classes=["uabi-matrix-change"]))
        return _entry(*parts) if parts else _entry("")

    @staticmethod
    def kernels(kernels: Sequence[dict[str, Any]]) -> nodes.table:
        rows = []
        for k in kernels:
            t = k.get("times", {})
            rows.append([
                _entry(nodes.strong(text=k["label"])),
                _entry(k["release"]),
                _entry(k.get("source", "")),
                _entry(k.get("accel", "")),
                _entry(" / ".join(_seconds(t.get(n)) for n in ("download", "prepare", "boot", "checks", "wall"))),
                _entry(k.get("verdict", "")),
            ])
        header = ("Kernel", "Release", "Source", "Run", "Download / prepare / boot / checks / wall", "Verdict")
        return _table(header, rows, classes=["uabi-matrix-kernels"])

    def findings(self, found: Sequence[dict[str, Any]]) -> list[nodes.Node]:
        if not found:
            return [para("The spec's version notes agree with every kernel, and no behaviour differs "
                          "between kernels that the spec treats alike.")]
        items = nodes.bullet_list()
        for f in found:
            item = nodes.list_item()
            head: list[nodes.Node | str] = [nodes.strong(text=f["kind"]), ": "]
            if f.get("behaviour"):
                head += [self.behaviour_ref(f["behaviour"]), ": "]
            item += para(*head, f["text"])
            items += item
        return [para("Findings of the version check:"), items]


def on_config_inited(app: Sphinx, config: Any) -> None:
    config.uabi_matrix_name = config.uabi_matrix or DEFAULT_MATRIX
    config.uabi_matrix = str((Path(app.confdir) / config.uabi_matrix_name).resolve())


def on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        (static / CSS).write_text(STYLE)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("uabi_matrix", DEFAULT_MATRIX, "env", str)
    app.add_config_value("uabi_matrix_name", DEFAULT_MATRIX, "env", str)
    app.connect("config-inited", on_config_inited)
    app.connect("build-finished", on_build_finished)
    app.add_directive("uabi-matrix", MatrixDirective)
    app.add_css_file(CSS)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
