"""Sphinx directives that render the uABI spec model into the HTML pages.

The pages under docs/ hold the project's own words and these directives;
every name, number and sentence about the uABI is drawn from the model at
build time, so the HTML cannot drift from the spec, the man pages or the
conformance checks.  Rendering follows docutils' own pattern: a walk over
the model with one ``visit_<Kind>`` method per kind of thing (a struct, a
flag, an error, a behaviour, a prose span...), each returning nodes.

Anchors carry the model's names verbatim (a behaviour's section has the id
``move.errno.EEXIST.dst-populated``, not Sphinx's normalised form), so the
man pages, the conformance reports and other sites can link to them.  The
``uabi`` domain records every anchor, which gives the roles
``:uabi:behaviour:``, ``:uabi:errno:``, ``:uabi:flag:``... to other pages and
puts the names into the search index.

The conformance results, when a file exists, are read like the spec: an
input of the build, noted as a dependency so that a rebuild notices a new
run.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.builders import Builder
from sphinx.config import Config
from sphinx.domains import Domain, ObjType
from sphinx.environment import BuildEnvironment
from sphinx.errors import ConfigError
from sphinx.roles import XRefRole
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

import spec as spec_pkg
from spec import yamlpos
from spec.loader import SCHEMA
from spec.model import (
    Behaviour,
    Bug,
    Constant,
    Error,
    Expectation,
    Feature,
    Field,
    Flag,
    FlagSet,
    HistoryEntry,
    Ioc,
    Ioctl,
    Note,
    PageRef,
    RangeIoctl,
    Spec,
    Step,
    Struct,
    TypeCode,
)
from spec.prose import Bold, Italic, ManRef, Paragraph, Prose, Text

logger = logging.getLogger(__name__)

# Where the conformance runner writes its results (relative to conf.py).
DEFAULT_RESULTS = "build/conformance/results.json"

# The kinds of anchored things; each is a role of the `uabi` domain.  A bold
# name in the prose is looked up in this order.
KINDS = ("behaviour", "errno", "flag", "feature", "ioctl", "struct", "field", "const", "check", "history",
         "bug", "note")
NAME_KINDS = ("ioctl", "flag", "feature", "const", "errno", "struct")


# --- inputs -------------------------------------------------------------------

def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _load_spec(path: str, stamp: tuple[int, int]) -> Spec:
    del stamp  # part of the cache key only: a changed file is loaded again
    return spec_pkg.load(path)


def model(config: Config) -> Spec:
    path = Path(config.uabi_spec)
    return _load_spec(str(path), _stamp(path))


@dataclasses.dataclass(frozen=True)
class Results:
    """One conformance run: the kernel, the date, and records by behaviour id.

    Records stay the runner's dicts, read with .get, so keys added later do
    no harm."""

    path: Path
    release: str
    date: str
    records: dict[str, tuple[dict[str, Any], ...]]

    def of(self, id_: str) -> tuple[dict[str, Any], ...]:
        return self.records.get(id_, ())

    def where(self) -> str:
        return f"{self.release}, {self.date}"


@functools.lru_cache(maxsize=4)
def _load_results(path: str, stamp: tuple[int, int]) -> Results | str:
    """The results, or why the file could not be used."""
    del stamp
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"cannot read the conformance results: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return "the conformance results are not an object with a 'results' list"
    kernel = data.get("kernel")
    release = kernel.get("release") if isinstance(kernel, dict) else None
    records: dict[str, list[dict[str, Any]]] = {}
    for record in data["results"]:
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.setdefault(record["id"], []).append(record)
    return Results(Path(path), str(release or "an unknown kernel"), str(data.get("date") or "an unknown date"),
                   {k: tuple(v) for k, v in records.items()})


def results(config: Config) -> Results | str | None:
    """The last run; None when there is none, a complaint when it is unusable."""
    path = Path(config.uabi_results)
    if not path.is_file():
        return None
    return _load_results(str(path), _stamp(path))


def on_builder_inited(app: Sphinx) -> None:
    """Complain once per build about an unusable results file (under -W the
    build fails); the pages then treat it as absent."""
    run = results(app.config)
    if isinstance(run, str):
        logger.warning("%s: %s", app.config.uabi_results, run)


def on_config_inited(app: Sphinx, config: Config) -> None:
    """Resolve the inputs against conf.py's directory, refuse a broken spec
    before any page is read, and give the pages the names they may use in
    titles (|ioctl|, |struct|, |feature|)."""
    confdir = Path(app.confdir)
    config.uabi_spec = str((confdir / (config.uabi_spec or spec_pkg.DEFAULT_SPEC)).resolve())
    config.uabi_results = str((confdir / (config.uabi_results or DEFAULT_RESULTS)).resolve())
    try:
        spec = model(config)
    except spec_pkg.SpecError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{config.uabi_spec}: {exc.strerror}") from None
    subst = {"ioctl": spec.ioctl.name, "struct": f"struct {spec.struct.name}", "feature": spec.feature.name}
    prolog = "".join(f".. |{k}| replace:: {v}\n" for k, v in subst.items())
    config.rst_prolog = (config.rst_prolog or "") + "\n" + prolog


# --- the domain -----------------------------------------------------------------

class UabiDomain(Domain):
    """The anchors of the rendered model, so that any page can link to them."""

    name = "uabi"
    label = "uABI"
    object_types = {kind: ObjType(kind, kind) for kind in KINDS}
    roles = {kind: XRefRole(innernodeclass=nodes.literal) for kind in KINDS} | {"name": XRefRole()}
    initial_data: dict[str, Any] = {"objects": {}}  # (kind, name) -> (docname, anchor)

    @property
    def objects(self) -> dict[tuple[str, str], tuple[str, str]]:
        return self.data.setdefault("objects", {})

    def note_object(self, kind: str, name: str, anchor: str, location: str) -> None:
        if (kind, name) in self.objects:
            other = self.objects[kind, name][0]
            logger.warning("%s %s is also rendered in %s", kind, name, other, location=location)
            return
        self.objects[kind, name] = (self.env.current_document.docname, anchor)

    def clear_doc(self, docname: str) -> None:
        for key, (doc, _) in list(self.objects.items()):
            if doc == docname:
                del self.objects[key]

    def merge_domaindata(self, docnames: Any, otherdata: dict[str, Any]) -> None:
        for key, (doc, anchor) in otherdata["objects"].items():
            if doc in docnames:
                self.objects[key] = (doc, anchor)

    def _ref(self, builder: Builder, fromdoc: str, kind: str, target: str,
             contnode: nodes.Element) -> nodes.reference | None:
        if (kind, target) not in self.objects:
            return None
        doc, anchor = self.objects[kind, target]
        return make_refnode(builder, fromdoc, doc, anchor, contnode, f"{kind} {target}")

    def resolve_xref(self, env: BuildEnvironment, fromdocname: str, builder: Builder, typ: str,
                     target: str, node: addnodes.pending_xref, contnode: nodes.Element) -> nodes.Element | None:
        if typ != "name":
            return self._ref(builder, fromdocname, typ, target, contnode)
        # A name in prose links to where it is defined when it is; otherwise
        # (a macro such as _UFFDIO_MOVE, a name from another page) it stays text.
        for kind in NAME_KINDS:
            ref = self._ref(builder, fromdocname, kind, target, contnode)
            if ref is not None:
                return ref
        return contnode

    def resolve_any_xref(self, env: BuildEnvironment, fromdocname: str, builder: Builder, target: str,
                         node: addnodes.pending_xref, contnode: nodes.Element) -> list[tuple[str, nodes.Element]]:
        found = []
        for kind in KINDS:
            ref = self._ref(builder, fromdocname, kind, target, contnode)
            if ref is not None:
                found.append((f"uabi:{kind}", ref))
        return found

    def get_objects(self) -> Iterator[tuple[str, str, str, str, str, int]]:
        for (kind, name), (doc, anchor) in self.objects.items():
            yield name, name, kind, doc, anchor, 1


def xref(kind: str, target: str, content: nodes.Node | None = None) -> addnodes.pending_xref:
    node = addnodes.pending_xref("", refdomain="uabi", reftype=kind, reftarget=target,
                                 refexplicit=content is not None, refwarn=True)
    node += content if content is not None else nodes.literal(text=target)
    return node


# --- prose ------------------------------------------------------------------------

class ProseVisitor:
    """Prose (paragraphs of lines of spans) to docutils nodes.

    Lines are sentences and stay on lines of their own in the source of the
    paragraph; a browser joins them.  Bold names that the spec defines link
    to their definition."""

    def __init__(self, names: Iterable[str], manpages_url: str | None) -> None:
        self.names = frozenset(names)
        self.manpages_url = manpages_url

    def visit(self, obj: Any) -> Any:
        return getattr(self, f"visit_{type(obj).__name__}")(obj)

    def visit_Prose(self, prose: Prose) -> list[nodes.paragraph]:
        return [self.visit(p) for p in prose.paragraphs]

    def visit_Paragraph(self, paragraph: Paragraph) -> nodes.paragraph:
        para = nodes.paragraph()
        for i, line in enumerate(paragraph.lines):
            if i:
                para += nodes.Text("\n")
            para.extend(self.line(line))
        return para

    def line(self, line: Sequence[Any]) -> Iterator[nodes.Node]:
        """The spans of a line; a minus sign stays with what it negates
        (-EINVAL), which a browser would otherwise break after."""
        spans = list(line)
        for i, span in enumerate(spans):
            if i and isinstance(spans[i - 1], Text) and spans[i - 1].text.endswith("\\-"):
                yield nodes.inline("", "", nodes.Text("-"), self.visit(span), classes=["uabi-nowrap"])
            elif isinstance(span, Text) and span.text.endswith("\\-") and i + 1 < len(spans):
                yield self.visit(Text(span.text[:-2]))
            else:
                yield self.visit(span)

    def visit_Text(self, span: Text) -> nodes.Text:
        return nodes.Text(span.text.replace("\\-", "-"))

    def visit_Bold(self, span: Bold) -> nodes.Node:
        strong = nodes.strong(text=span.text)
        return xref("name", span.text, strong) if span.text in self.names else strong

    def visit_Italic(self, span: Italic) -> nodes.emphasis:
        return nodes.emphasis(text=span.text)

    def visit_ManRef(self, span: ManRef) -> addnodes.manpage:
        """As Sphinx's :manpage: role makes it: literal emphasis, a link if
        conf.py sets manpages_url."""
        return manpage(span.page, span.section, self.manpages_url)

    def inline(self, prose: Prose) -> list[nodes.Node]:
        """The spans of a one-paragraph doc, for a place that takes no
        paragraph (a field of a list, a term)."""
        para = self.visit(prose.paragraphs[0])
        return list(para.children)


def manpage(page: str, section: str, url_template: str | None) -> addnodes.manpage:
    text = f"{page}({section})"
    info = {"path": text, "page": page, "section": section}
    inner = (nodes.reference("", text, refuri=url_template.format_map(info), classes=["manpage"])
             if url_template else nodes.Text(text))
    return addnodes.manpage(text, "", inner, classes=["manpage"], **info)


# --- node helpers -----------------------------------------------------------------

Cell = str | nodes.Node | Sequence[nodes.Node]


def para(*children: nodes.Node | str, classes: Sequence[str] = ()) -> nodes.paragraph:
    p = nodes.paragraph(classes=list(classes))
    for c in children:
        p += nodes.Text(c) if isinstance(c, str) else c
    return p


def _body(cell: Cell) -> list[nodes.Node]:
    """Cell contents as body elements: inline nodes are wrapped in a paragraph."""
    if isinstance(cell, str):
        return [para(cell)]
    items = [cell] if isinstance(cell, nodes.Node) else list(cell)
    out: list[nodes.Node] = []
    for item in items:
        if isinstance(item, (nodes.Inline, nodes.Text)):
            if not out or not isinstance(out[-1], nodes.paragraph) or out[-1].get("classes") != ["inline"]:
                out.append(nodes.paragraph(classes=["inline"]))
            out[-1] += item
        else:
            out.append(item)
    for node in out:
        if isinstance(node, nodes.paragraph):
            node["classes"] = [c for c in node["classes"] if c != "inline"]
    return out


def table(headers: Sequence[str], rows: Iterable[tuple[Sequence[Cell], str | None]],
          classes: Sequence[str] = (), title: str | None = None) -> nodes.table:
    """A table; each row is (cells, its anchor id or None)."""
    tbl = nodes.table(classes=["colwidths-auto", "uabi", *classes])
    if title:
        tbl += nodes.title(text=title)
    group = nodes.tgroup(cols=len(headers))
    tbl += group
    group.extend(nodes.colspec(colwidth=1) for _ in headers)
    head = nodes.thead()
    head += nodes.row("", *(nodes.entry("", para(h)) for h in headers))
    body = nodes.tbody()
    for cells, anchor in rows:
        row = nodes.row(ids=[anchor] if anchor else [])
        row.extend(nodes.entry("", *_body(c)) for c in cells)
        body += row
    group += head
    group += body
    return tbl


def field_list(items: Iterable[tuple[str, Cell]]) -> nodes.field_list:
    fl = nodes.field_list(classes=["uabi"])
    for name, value in items:
        fl += nodes.field("", nodes.field_name(text=name), nodes.field_body("", *_body(value)))
    return fl


def literal(text: str) -> nodes.literal:
    return nodes.literal(text=text)


def hexa(value: int) -> nodes.literal:
    return literal(f"{value:#x}")


def joined(items: Iterable[nodes.Node], sep: str = ", ") -> list[nodes.Node]:
    out: list[nodes.Node] = []
    for item in items:
        if out:
            out.append(nodes.Text(sep))
        out.append(item)
    return out


def behaviour_links(ids: Iterable[str]) -> list[nodes.Node]:
    return joined(xref("behaviour", i) for i in ids)


def since(version: Any) -> nodes.inline:
    return nodes.inline(text=f"since Linux {version}", classes=["uabi-since"])


# --- the model ------------------------------------------------------------------------

class Renderer:
    """The model to docutils nodes, for one directive: one visit_<Kind> per
    model class, dispatched on the class name as docutils' NodeVisitor does.

    The visitor anchors what it renders (the node's ids, set verbatim and
    registered with the document, plus an entry in the `uabi` domain)."""

    def __init__(self, directive: SphinxDirective, spec: Spec) -> None:
        self.directive = directive
        self.spec = spec
        self.env = directive.env
        self.url = directive.config.manpages_url or None
        self.prose = ProseVisitor(list(spec.values()) + [e.errno for e in spec.errors]
                                  + [s.name for s in spec.structs], self.url)

    def visit(self, obj: Any, *args: Any) -> Any:
        return getattr(self, f"visit_{type(obj).__name__}")(obj, *args)

    def doc(self, prose: Prose) -> list[nodes.paragraph]:
        return self.prose.visit(prose)

    def anchor(self, node: nodes.Element, kind: str, name: str, anchor: str | None = None) -> nodes.Element:
        """Give `node` the id `anchor` verbatim (default KIND-NAME) and record it."""
        node["ids"].append(self.anchored_row(kind, name, anchor))
        self.directive.state.document.set_id(node)
        return node

    def anchored_row(self, kind: str, name: str, anchor: str | None = None) -> str:
        """The id for a table row (rows are built later), recorded as `name`'s anchor."""
        anchor = anchor or f"{kind}-{name}"
        domain = self.env.get_domain("uabi")
        assert isinstance(domain, UabiDomain)
        domain.note_object(kind, name, anchor, self.directive.get_location())
        return anchor

    # -- the ioctl ----------------------------------------------------------------------

    def visit_Ioctl(self, ioctl: Ioctl) -> list[nodes.Node]:
        """The synopsis: how a program spells the call, then the request's parts."""
        spec = self.spec
        arg = f"struct {ioctl.arg.name} *argp" if ioctl.arg else "unsigned long arg"
        code = f"#include <{spec.header}>\n#include <sys/ioctl.h>\n\nint ioctl(int fd, {ioctl.name}, {arg});\n"
        if ioctl.arg:
            code += "\n" + self.declaration(ioctl.arg)
        block = nodes.literal_block(code, code, language="c")
        lead = self.anchor(para(nodes.strong(text=ioctl.name), f" \N{EM DASH} {ioctl.summary}",
                                classes=["uabi-lead"]), "ioctl", ioctl.name)
        facts: list[tuple[str, Cell]] = [
            ("Request", [literal(ioctl.name), nodes.Text(" = "), literal(ioctl.macro)]),
            ("Request code", [hexa(ioctl.request), nodes.Text(f" on {', '.join(spec.ioc.arches)}")]),
            ("Type", [literal(ioctl.type_name), nodes.Text(" = "), hexa(ioctl.type_value)]),
            ("Number", [literal(ioctl.nr_name or str(ioctl.nr)), nodes.Text(" = "), hexa(ioctl.nr)]),
            ("Direction", ", ".join(ioctl.dirs) or "none"),
        ]
        if ioctl.arg:
            facts.append(("Argument", [xref("struct", ioctl.arg.name, literal(f"struct {ioctl.arg.name}")),
                                       nodes.Text(f", {ioctl.arg.size} bytes")]))
        facts.append(("Header", literal(f"<{spec.header}>")))
        facts.append(("Since", f"Linux {spec.since}"))
        if spec.commit:
            facts.append(("Upstream commit", literal(spec.commit)))
        return [lead, block, field_list(facts)]

    def declaration(self, struct: Struct) -> str:
        width = max(len(f.ctype.declarator(f.name)) for f in struct.fields) + 1
        lines = [f"struct {struct.name} {{"]
        for f in struct.fields:
            decl = f.ctype.declarator(f.name) + ";"
            lines.append(f"    {decl:<{width}} /* {f.comment} */" if f.comment else f"    {decl}")
        return "\n".join(lines + ["};", ""])

    # -- structs ---------------------------------------------------------------------------

    def visit_Struct(self, struct: Struct, title: bool = False) -> list[nodes.Node]:
        """A layout table: where each field is, what it holds, who writes it."""
        rows = [self.visit(f, struct) for f in struct.fields]
        tbl = table(("Field", "Offset", "Size", "C type", "Direction", "Description"), rows,
                    classes=["uabi-layout"])
        facts: list[tuple[str, Cell]] = [("Size", f"{struct.size} bytes"), ("Alignment", f"{struct.align} bytes")]
        if struct.copied_in is not None:
            facts.append(("Copied in", f"the first {struct.copied_in} bytes"))
        out: list[nodes.Node] = [*self.doc(struct.doc), field_list(facts), tbl]
        if not title:
            self.anchor(tbl, "struct", struct.name)
            return out
        sec = nodes.section("", nodes.title("", "", literal(f"struct {struct.name}")), *out)
        return [self.anchor(sec, "struct", struct.name)]

    def visit_Field(self, f: Field, struct: Struct) -> tuple[list[Cell], str]:
        ctype: Cell = literal(f.ctype.name)
        if f.ctype.struct:
            ctype = xref("struct", f.ctype.struct, literal(f.ctype.name))
        desc: list[nodes.Node] = list(self.doc(f.doc))
        if f.flags:
            fs = self.spec.flagset(f.flags)
            desc.append(para("Flags: ", *joined(xref("flag", v.name) for v in fs.values)))
        name = f"{struct.name}.{f.name}"
        cells: list[Cell] = [literal(f.name), str(f.offset), str(f.size), ctype, f.dir, desc]
        return cells, self.anchored_row("field", name)

    # -- flags, the feature bit, the range-ioctl bit -----------------------------------------

    def visit_FlagSet(self, fs: FlagSet) -> list[nodes.Node]:
        rows = [self.visit(f) for f in fs.values]
        tbl = table(("Flag", "Bit", "Value", "Description"), rows, classes=["uabi-flags"])
        facts = field_list([("Field", xref("field", f"{fs.struct}.{fs.field}")), ("Mask", hexa(fs.mask))])
        return [*self.doc(fs.doc), facts, tbl]

    def visit_Flag(self, f: Flag) -> tuple[list[Cell], str]:
        desc: list[nodes.Node] = list(self.doc(f.doc))
        if f.since:
            desc.insert(0, para(since(f.since)))
        desc.append(para("Behaviours: ", *behaviour_links(f.behaviours), classes=["uabi-refs"]))
        return [literal(f.name), str(f.bit), hexa(f.value), desc], self.anchored_row("flag", f.name)

    def visit_Feature(self, feat: Feature) -> list[nodes.Node]:
        lead = self.anchor(para(nodes.strong(text=feat.name), classes=["uabi-lead"]), "feature", feat.name)
        facts = field_list([
            ("Field", xref("field", f"{feat.struct}.{feat.field}")),
            ("Bit", str(feat.bit)), ("Value", hexa(feat.value)), ("Since", f"Linux {feat.since}"),
            ("Behaviours", behaviour_links(feat.behaviours)),
        ])
        return [lead, facts, *self.doc(feat.doc)]

    def visit_RangeIoctl(self, rio: RangeIoctl) -> list[nodes.Node]:
        nr = self.spec.ioctl.nr_name or str(self.spec.ioctl.nr)
        facts = field_list([
            ("Field", xref("field", f"{rio.struct}.{rio.field}")),
            ("Bit", [literal(f"1 << {nr}"), nodes.Text(f" (bit {rio.bit})")]), ("Value", hexa(rio.value)),
        ])
        return [facts, *self.doc(rio.doc)]

    # -- errors and the order of checks ------------------------------------------------------

    def errors(self, errors: Sequence[Error]) -> list[nodes.Node]:
        dl = nodes.definition_list(classes=["uabi-errors"])
        seen: dict[str, int] = {}
        for e in errors:
            seen[e.errno] = seen.get(e.errno, 0) + 1
            dl += self.visit(e, seen[e.errno])
        return [dl]

    def visit_Error(self, e: Error, nth: int) -> nodes.definition_list_item:
        term = nodes.term("", "", nodes.strong(text=e.errno))
        if e.since:
            term += nodes.Text(" ")
            term += since(e.since)
        if nth == 1:
            self.anchor(term, "errno", e.errno)
        else:
            term["ids"].append(f"errno-{e.errno}-{nth}")
            self.directive.state.document.set_id(term)
        body = nodes.definition("", *self.doc(e.doc),
                                para("Behaviours: ", *behaviour_links(e.behaviours), classes=["uabi-refs"]))
        return nodes.definition_list_item("", term, body)

    def precedence(self, steps: Sequence[Step]) -> list[nodes.Node]:
        rows = [self.visit(s, i) for i, s in enumerate(steps, 1)]
        return [*self.doc(self.spec.precedence_doc),
                table(("#", "Stage", "Condition", "Behaviour", "Outcome"), rows, classes=["uabi-precedence"])]

    def visit_Step(self, step: Step, n: int) -> tuple[list[Cell], str]:
        b = self.spec.behaviour(step.behaviour)
        outcome = [para(f"{e.kernels}: ", *joined((literal(w) for w in e.describe().split()), " "))
                   for e in b.expect]
        return ([str(n), step.stage, literal(step.condition), xref("behaviour", b.id), outcome],
                self.anchored_row("check", step.condition))

    # -- behaviours -----------------------------------------------------------------------------

    def visit_Behaviour(self, b: Behaviour, results: Results | None) -> nodes.section:
        sec = nodes.section()
        sec += nodes.title("", "", literal(b.id))
        self.anchor(sec, "behaviour", b.id, b.id)
        sec += para(nodes.emphasis(text=b.summary), classes=["uabi-summary"])
        sec += self.result(b, results)
        sec.extend(self.doc(b.doc))
        facts: list[tuple[str, Cell]] = [("Source", b.source)]
        if b.requires:
            facts.append(("Requires", joined(literal(r) for r in b.requires)))
        if b.unobservable:
            facts.append(("Unobservable", b.unobservable))
        if b.since is not None:
            facts.append(("Since", f"Linux {b.since}"))
        if b.changes:
            facts.append(("Changes in", joined(self.version_link(v) for v in b.changes)))
        cited = list(self.citations(b.id))
        if cited:
            facts.append(("Cited by", joined(cited)))
        sec += field_list(facts)
        sec += self.expectations(b.expect)
        return sec

    def citations(self, id_: str) -> Iterator[nodes.Node]:
        """Where the rest of the spec names this behaviour, as links back."""
        spec = self.spec
        seen: set[str] = set()
        for e in spec.errors:
            if id_ in e.behaviours and e.errno not in seen:
                seen.add(e.errno)
                yield xref("errno", e.errno, nodes.strong(text=e.errno))
        for fs in spec.flags:
            for f in fs.values:
                if id_ in f.behaviours:
                    yield xref("flag", f.name)
        if id_ in spec.feature.behaviours:
            yield xref("feature", spec.feature.name)
        for i, s in enumerate(spec.precedence, 1):
            if s.behaviour == id_:
                yield xref("check", s.condition, nodes.Text(f"check {i} ({s.condition})"))
        for i, bug in enumerate(spec.bugs, 1):
            if bug.behaviour == id_:
                yield xref("bug", str(i), nodes.Text(f"bug {i}"))
        for i, note in enumerate(spec.notes, 1):
            if id_ in note.behaviours:
                yield xref("note", str(i), nodes.Text(f"note {i}"))

    def version_link(self, version: Any) -> nodes.Node:
        """A kernel version, linked to its history entry when it has one."""
        text = nodes.Text(f"Linux {version}")
        if any(h.version == version for h in self.spec.history):
            return xref("history", str(version), text)
        return text

    def expectations(self, expect: Sequence[Expectation]) -> nodes.table:
        """A row per kernel range: the call's result, then a column for each
        other outcome the spec states for this behaviour."""
        keys = [f.name for f in dataclasses.fields(Expectation) if f.name not in ("kernels", "errno", "instead")
                and any(getattr(e, f.name) is not None for e in expect)]
        rows = [self.visit(e, keys) for e in expect]
        return table(("Kernels", "Result", *keys), rows, classes=["uabi-expect"])

    def visit_Expectation(self, e: Expectation, keys: Sequence[str]) -> tuple[list[Cell], None]:
        result: Cell = "0"
        if e.instead:
            result = [nodes.Text("-1, "), nodes.strong(text=e.instead), nodes.Text(" (documented: "),
                      nodes.strong(text=str(e.errno)), nodes.Text(")")]
        elif e.errno:
            result = [nodes.Text("-1, "), nodes.strong(text=e.errno)]
        return [str(e.kernels), result, *(getattr(e, k) or "" for k in keys)], None

    def result(self, b: Behaviour, run: Results | None) -> nodes.Node:
        """The conformance status of one behaviour on the last run, if any."""
        if run is None:
            return para("Conformance: not yet checked on this build.", classes=["uabi-result", "uabi-unchecked"])
        records = run.of(b.id)
        if not records:
            return para(f"Conformance: not checked in the run on {run.where()}.",
                        classes=["uabi-result", "uabi-unchecked"])
        box = nodes.container(classes=["uabi-result"])
        for r in records:
            box += para("Conformance: ", badge(r.get("status")), f" on {run.where()}")
            details = [(k.capitalize(), str(r[k])) for k in ("expected", "observed", "reason") if r.get(k)]
            if details and r.get("status") != "PASS":
                box += field_list(details)
        return box

    # -- the rest of the page -------------------------------------------------------------------

    def visit_HistoryEntry(self, h: HistoryEntry) -> tuple[list[Cell], str]:
        return [f"Linux {h.version}", self.doc(h.doc)], self.anchored_row("history", str(h.version))

    def visit_Bug(self, bug: Bug, n: int) -> nodes.list_item:
        body: list[nodes.Node] = list(self.doc(bug.doc))
        if bug.behaviour:
            body.append(para("Behaviour: ", xref("behaviour", bug.behaviour), classes=["uabi-refs"]))
        return self.anchor(nodes.list_item("", *body), "bug", str(n))

    def visit_Note(self, note: Note, n: int) -> nodes.list_item:
        body: list[nodes.Node] = list(self.doc(note.doc))
        if note.behaviours:
            body.append(para("Behaviours: ", *behaviour_links(note.behaviours), classes=["uabi-refs"]))
        return self.anchor(nodes.list_item("", *body), "note", str(n))

    def visit_PageRef(self, ref: PageRef) -> addnodes.manpage:
        return manpage(ref.page, ref.section, self.url)

    # -- the context -------------------------------------------------------------------------------

    def visit_Ioc(self, ioc: Ioc) -> list[nodes.Node]:
        facts = field_list([
            ("Architectures", ", ".join(ioc.arches)),
            ("Bits", ", ".join(f"{k} {getattr(ioc, k)}" for k in ("nrbits", "typebits", "sizebits", "dirbits"))),
            ("Directions", ", ".join(f"{name} = {value}" for name, value in ioc.dirs)),
        ])
        return [*self.doc(ioc.doc), facts]

    def visit_TypeCode(self, t: TypeCode) -> tuple[list[Cell], str]:
        return [literal(t.name), hexa(t.value), self.doc(t.doc)], self.anchored_row("const", t.name)

    def visit_Constant(self, c: Constant) -> tuple[list[Cell], str]:
        return [literal(c.name), hexa(c.value), self.doc(c.doc)], self.anchored_row("const", c.name)

    def context_ioctl(self, i: Ioctl) -> tuple[list[Cell], str]:
        arg: Cell = xref("struct", i.arg.name, literal(f"struct {i.arg.name}")) if i.arg else "none"
        return ([literal(i.name), hexa(i.request), literal(i.macro), arg, self.doc(i.doc)],
                self.anchored_row("ioctl", i.name))


def status_counts(spec: Spec, run: Results) -> dict[str, int]:
    """How many behaviours got each status ("not run" for none), by status."""
    counts: dict[str, int] = {}
    for b in spec.behaviours:
        for rec in run.of(b.id) or ({"status": "not run"},):
            counts[str(rec.get("status"))] = counts.get(str(rec.get("status")), 0) + 1
    return dict(sorted(counts.items()))


def badge(status: Any) -> nodes.inline:
    text = str(status or "UNKNOWN")
    return nodes.inline(text=text, classes=["uabi-status", f"uabi-status-{nodes.make_id(text)}"])


# --- the directives ---------------------------------------------------------------------------

class UabiDirective(SphinxDirective):
    """Renders one part of the spec in place; `part` names the method."""

    has_content = False
    optional_arguments = 1
    option_spec = {"title": directives.flag}
    part = ""

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(self.config.uabi_spec)
        renderer = Renderer(self, model(self.config))
        return getattr(self, f"render_{self.part.replace('-', '_')}")(renderer, renderer.spec)

    def run_results(self) -> Results | None:
        self.env.note_dependency(self.config.uabi_results)
        run = results(self.config)
        return run if isinstance(run, Results) else None

    def render_synopsis(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.visit(spec.ioctl)

    def render_description(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [*r.doc(spec.doc), *r.doc(spec.ioctl.doc)]

    def render_struct(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        struct = spec.struct_named(self.arguments[0]) if self.arguments else spec.struct
        return r.visit(struct, "title" in self.options)

    def render_flags(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [n for fs in spec.flags for n in r.visit(fs)]

    def render_feature(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.visit(spec.feature)

    def render_range_ioctl(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.visit(spec.range_ioctl)

    def render_return_value(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.doc(spec.return_value)

    def render_errors(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.errors(spec.errors)

    def render_precedence(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.precedence(spec.precedence)

    def render_behaviours(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        run = self.run_results()
        return [r.visit(b, run) for b in spec.behaviours]

    def render_history(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [table(("Kernel", "Change"), (r.visit(h) for h in spec.history), classes=["uabi-history"])]

    def render_bugs(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        if not spec.bugs:
            return [para("None known.")]
        return [nodes.enumerated_list("", *(r.visit(b, i) for i, b in enumerate(spec.bugs, 1)))]

    def render_notes(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        if not spec.notes:
            return []
        return [nodes.enumerated_list("", *(r.visit(n, i) for i, n in enumerate(spec.notes, 1)))]

    def render_see_also(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [para(*joined(r.visit(ref) for ref in spec.see_also)), para(literal(spec.see_also_path))]

    def render_ioc(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return r.visit(spec.ioc)

    def render_types(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [table(("Type", "Value", "Description"), (r.visit(t) for t in spec.types))]

    def render_ioctls(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        rows = (r.context_ioctl(i) for i in spec.context_ioctls)
        return [table(("Ioctl", "Request code", "Definition", "Argument", "Description"), rows)]

    def render_structs(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [n for s in spec.context_structs for n in r.visit(s, True)]

    def render_constants(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        return [table(("Constant", "Value", "Description"), (r.visit(c) for c in spec.constants))]

    def render_overview(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        """The spec at a glance, for the front page."""
        run = self.run_results()
        checked: Cell = "not yet checked on this build"
        if run:
            counts = status_counts(spec, run)
            checked = f"{', '.join(f'{k} {v}' for k, v in counts.items())}, on {run.where()}"
        return [field_list([
            ("Ioctl", [xref("ioctl", spec.ioctl.name), nodes.Text(f" \N{EM DASH} {spec.ioctl.summary}")]),
            ("Request code", hexa(spec.ioctl.request)),
            ("Header", literal(f"<{spec.header}>")),
            ("Since", f"Linux {spec.since}"),
            ("Spec", [literal(Path(spec.path).name), nodes.Text(f", dated {spec.date}")]),
            ("Contents", f"{len(spec.errors)} error conditions, {len(spec.precedence)} ordered checks, "
                         f"{len(spec.behaviours)} behaviours"),
            ("Conformance", checked),
        ])]

    def render_results(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        """The last conformance run: counts by status, then every behaviour."""
        run = self.run_results()
        if run is None:
            return [para("Conformance: not yet checked on this build.", classes=["uabi-unchecked"])]
        counts = status_counts(spec, run)
        summary = field_list([("Kernel", run.release), ("Date", run.date),
                              ("File", literal(str(run.path))),
                              ("Statuses", ", ".join(f"{k} {v}" for k, v in counts.items()))])
        rows = []
        for b in spec.behaviours:
            for rec in run.of(b.id) or ({},):
                status: list[nodes.Node] = [badge(rec.get("status"))] if rec else [nodes.Text("not run")]
                duration = rec.get("duration")
                if isinstance(duration, (int, float)):
                    status.append(nodes.inline(text=f" {duration:.2f} s", classes=["uabi-duration"]))
                rows.append(([xref("behaviour", b.id), status,
                              *(str(rec.get(k) or "") for k in ("expected", "observed", "reason"))], None))
        out: list[nodes.Node] = [summary, table(("Behaviour", "Status", "Expected", "Observed", "Reason"), rows,
                                                classes=["uabi-results"])]
        stale = sorted(set(run.records) - {b.id for b in spec.behaviours})
        if stale:
            out.append(para("Results for ids the spec no longer has: ", *joined(literal(s) for s in stale)))
        return out

    def render_spec_excerpt(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        """A piece of the spec's own YAML: its leading comment (`header`), or
        the first behaviour whose outcome changes between kernels."""
        text = Path(self.config.uabi_spec).read_text(encoding="utf-8")
        lines = text.splitlines()
        if self.arguments and self.arguments[0] == "header":
            end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
            excerpt = lines[:end]
        else:
            _, where = yamlpos.load(text, spec.path)
            index = next((i for i, b in enumerate(spec.behaviours) if b.changes), 0)
            start = where.at(("behaviours", index)).line - 1
            stop = (where.at(("behaviours", index + 1)).line - 1 if index + 1 < len(spec.behaviours)
                    else where.at(("history",), key=True).line - 1)
            excerpt = [line for line in lines[start:stop] if line.strip() and not line.lstrip().startswith("#")]
        code = textwrap.dedent("\n".join(excerpt)) + "\n"
        return [nodes.literal_block(code, code, language="yaml")]


    def render_schema(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        """The keys of one object of the spec's JSON Schema (a JSON pointer such
        as /$defs/expectation), so the format's vocabulary is written once."""
        self.env.note_dependency(str(SCHEMA))
        schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
        node = schema
        for part in filter(None, self.arguments[0].split("/")):
            node = node[part]
        props: dict[str, Any] = {}
        required: set[str] = set()
        for piece in [node, *(schema_ref(schema, s) for s in node.get("allOf", ()))]:
            props.update(piece.get("properties", {}))
            required.update(piece.get("required", ()))
        rows = [([literal(k), "yes" if k in required else "", schema_value(schema, v)], None)
                for k, v in props.items()]
        return [table(("Key", "Required", "Value"), rows, classes=["uabi-schema"])]

    def render_commands(self, r: Renderer, spec: Spec) -> list[nodes.Node]:
        """The subcommands of `uffd-uabi`, as tools/cli.py wires them (those built so far)."""
        from tools.cli import SUBCOMMANDS

        rows = [([literal(f"uffd-uabi {name}"), help_text], None)
                for name, (module, help_text) in SUBCOMMANDS.items() if importlib.util.find_spec(module)]
        return [table(("Command", "What it does"), rows)]


def schema_ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def schema_value(schema: dict[str, Any], node: dict[str, Any]) -> list[nodes.Node]:
    """What a schema node allows, in a few words."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = schema_ref(schema, node)
        if "pattern" in target:
            return [nodes.emphasis(text=name), nodes.Text(": "), literal(target["pattern"])]
        return [nodes.emphasis(text=name), nodes.Text(f" ({target.get('type', 'mapping')})")]
    if "enum" in node:
        return [nodes.Text("one of "), *joined(literal(str(v)) for v in node["enum"])]
    if "const" in node:
        return [literal(str(node["const"]))]
    if "allOf" in node:
        return schema_value(schema, node["allOf"][0])
    kind = node.get("type", "mapping")
    if kind == "array":
        items = node.get("items", {})
        if items.get("type") == "object":
            return [nodes.Text("a list of mappings")]
        return [nodes.Text("a list of "), *schema_value(schema, items)]
    if kind == "object":
        return [nodes.Text("a mapping")]
    return [nodes.Text({"string": "text", "integer": "an integer"}.get(kind, kind))]


PARTS = ("synopsis", "description", "struct", "flags", "feature", "range-ioctl", "return-value", "errors",
         "precedence", "behaviours", "history", "bugs", "notes", "see-also", "ioc", "types", "ioctls",
         "structs", "constants", "overview", "results", "spec-excerpt", "schema", "commands")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("uabi_spec", str(spec_pkg.DEFAULT_SPEC), "env", str)
    app.add_config_value("uabi_results", DEFAULT_RESULTS, "env", str)
    app.connect("config-inited", on_config_inited)
    app.connect("builder-inited", on_builder_inited)
    app.add_domain(UabiDomain)
    for part in PARTS:
        cls = type(f"Uabi{part.title().replace('-', '')}", (UabiDirective,), {"part": part})
        app.add_directive(f"uabi-{part}", cls)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
