"""Classify the changes between two versions of a spec, for review: an ABI
break (programs built against the old spec stop working: a field's offset,
size, type or signedness, a flag's or the feature's bit, a request code
changed; a flag, field, error or behaviour removed; a behaviour's outcome
changed on kernels the old spec already covered), a compatible extension
(a new flag, feature, error, behaviour or context item; a behaviour that
covers more kernels), or documentation only (prose, summaries, history).

OLD and NEW are spec files or REV:PATH in this git repository
(HEAD:spec/uffdio_move.yaml).  Exit status 1 when anything breaks the ABI,
0 otherwise, 2 when a spec does not load.

A behaviour's last kernel range is open-ended (a `since` without an
`until`), so telling how a newer kernel behaves means closing it and adding
a range after it.  Such
a change is an extension when it starts after every kernel version the old
spec names (its horizon): the old spec had not seen those kernels.  On
kernels up to the horizon, a different outcome is a break.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spec import Spec, SpecError, load
from spec.errors import Position
from spec.loader import loads
from spec.model import Error, Expectation, Field, KernelRange, Struct, Version
from spec.prose import Prose, plain_line

TAKES_SPEC = False
ROOT = Path(__file__).resolve().parents[1]

BREAK, EXTENSION, DOCS = "break", "extension", "documentation"
TITLES = {BREAK: "ABI break", EXTENSION: "compatible extension", DOCS: "documentation only"}
OUTCOME = ("errno", "instead", "move", "memory", "wake", "huge", "swap", "feature", "ioctl_bit")


@dataclass(frozen=True)
class Change:
    kind: str  # BREAK, EXTENSION or DOCS
    item: str  # what changed: "flag NAME", "field STRUCT.FIELD", "behaviour ID"
    what: str  # how: "bit 0 -> 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="OLD", help="the spec before: a file or REV:PATH (git)")
    parser.add_argument("new", metavar="NEW", help="the spec after: a file or REV:PATH (git)")
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                        help="text (default), json, or markdown for a review comment")


def run(args: argparse.Namespace) -> int:
    old, new = read(args.old), read(args.new)
    changes = diff(old, new)
    render = {"text": text, "json": as_json, "markdown": markdown}[args.format]
    sys.stdout.write(render(args.old, args.new, changes))
    return 1 if any(c.kind == BREAK for c in changes) else 0


def read(where: str) -> Spec:
    """A spec file, or REV:PATH through git show, named as given in messages."""
    if Path(where).exists() or ":" not in where:
        return load(where)
    proc = subprocess.run(["git", "show", where], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise SpecError(Position(where, 1, 1), f"cannot read from git: {reason}")
    return loads(proc.stdout, where)


def verdict(changes: Sequence[Change]) -> str:
    for kind in (BREAK, EXTENSION, DOCS):
        if any(c.kind == kind for c in changes):
            return kind
    return "none"


# --- the comparison ------------------------------------------------------------

def diff(old: Spec, new: Spec) -> list[Change]:
    out: list[Change] = []
    out += _top(old, new)
    out += _values(old, new)
    out += _ioctls(old, new)
    out += _structs(old, new)
    out += _flags(old, new)
    out += _feature(old, new)
    out += _errors(old, new)
    out += _precedence(old, new)
    out += _behaviours(old, new)
    out += _history(old, new)
    return out


def _top(old: Spec, new: Spec) -> Iterable[Change]:
    if old.header != new.header:
        yield Change(BREAK, "header", f"<{old.header}> -> <{new.header}>")
    yield from _since("interface", old.since, new.since)
    ioc = ("nrbits", "typebits", "sizebits", "dirbits", "dirs")
    for key in ioc:
        if getattr(old.ioc, key) != getattr(new.ioc, key):
            yield Change(BREAK, "ioctl encoding", f"{key} {getattr(old.ioc, key)} -> {getattr(new.ioc, key)}")
    yield from _added_removed("architecture", old.ioc.arches, new.ioc.arches)
    rio = (old.range_ioctl.struct, old.range_ioctl.field), (new.range_ioctl.struct, new.range_ioctl.field)
    if rio[0] != rio[1]:
        yield Change(BREAK, "range-ioctl bit", f"reported in {'.'.join(rio[0])} -> {'.'.join(rio[1])}")
    for key in ("name", "date", "commit", "see_also_path"):
        yield from _differs(DOCS, key.replace("_", "-"), "", getattr(old, key), getattr(new, key))
    for label, a, b in (("description", old.doc, new.doc), ("ioctl encoding", old.ioc.doc, new.ioc.doc),
                        ("range-ioctl bit", old.range_ioctl.doc, new.range_ioctl.doc),
                        ("return value", old.return_value, new.return_value),
                        ("precedence", old.precedence_doc, new.precedence_doc)):
        yield from _prose(label, a, b)
    for label, a, b in (("bugs", [x.doc for x in old.bugs], [x.doc for x in new.bugs]),
                        ("notes", [x.doc for x in old.notes], [x.doc for x in new.notes])):
        if [p.paragraphs for p in a] != [p.paragraphs for p in b]:
            yield Change(DOCS, label, f"{len(a)} -> {len(b)} entries" if len(a) != len(b) else "text changed")
    pages = ([f"{p.page}({p.section})" for p in old.see_also], [f"{p.page}({p.section})" for p in new.see_also])
    if pages[0] != pages[1]:
        yield Change(DOCS, "see also", f"{', '.join(pages[0])} -> {', '.join(pages[1])}")
    for t in new.types:
        before = next((x for x in old.types if x.name == t.name), None)
        if before is not None:
            yield from _prose(f"ioctl type {t.name}", before.doc, t.doc)
    for c in new.constants:
        before = next((x for x in old.constants if x.name == c.name), None)
        if before is not None:
            yield from _prose(f"constant {c.name}", before.doc, c.doc)


def _roles(spec: Spec) -> dict[str, str]:
    """What each named number is, for the messages."""
    out = {t.name: "ioctl type" for t in spec.types}
    for i in spec.ioctls:
        if i.nr_name:
            out[i.nr_name] = "ioctl number"
        out[i.name] = "request code"
    out.update({f.name: "flag" for fs in spec.flags for f in fs.values})
    out[spec.feature.name] = "feature"
    out.update({c.name: "constant" for c in spec.constants})
    return out


def _values(old: Spec, new: Spec) -> Iterable[Change]:
    """Every named number: request codes, ioctl numbers, flag and feature
    bits, constants.  A program compiled with the old value sends it still."""
    before, after = old.values(), new.values()
    roles = _roles(old) | _roles(new)
    bits = {f.name: f.bit for fs in old.flags for f in fs.values} | {old.feature.name: old.feature.bit}
    new_bits = {f.name: f.bit for fs in new.flags for f in fs.values} | {new.feature.name: new.feature.bit}
    for name, value in before.items():
        role = roles[name]
        if name not in after:
            yield Change(BREAK, f"{role} {name}", "removed")
        elif after[name] != value:
            if name in bits and name in new_bits:
                how = f"bit {bits[name]} -> {new_bits[name]} ({value:#x} -> {after[name]:#x})"
            else:
                how = f"{value:#x} -> {after[name]:#x}"
            yield Change(BREAK, f"{role} {name}", how)
    for name, value in after.items():
        if name not in before:
            yield Change(EXTENSION, f"{roles[name]} {name}", f"added ({value:#x})")


def _ioctls(old: Spec, new: Spec) -> Iterable[Change]:
    olds = {i.name: i for i in old.ioctls}
    for i in new.ioctls:
        o = olds.get(i.name)
        if o is None:
            continue  # an added ioctl shows as an added request code
        item = f"ioctl {i.name}"
        yield from _differs(BREAK, item, "argument", _arg(o.arg), _arg(i.arg))
        yield from _differs(BREAK, item, "direction", "/".join(o.dirs) or "none", "/".join(i.dirs) or "none")
        yield from _differs(DOCS, item, "summary", repr(o.summary), repr(i.summary))
        yield from _prose(item, o.doc, i.doc)


def _arg(s: Struct | None) -> str:
    return f"struct {s.name}" if s else "none"


def _structs(old: Spec, new: Spec) -> Iterable[Change]:
    olds = {s.name: s for s in old.structs}
    news = {s.name: s for s in new.structs}
    yield from _added_removed("struct", list(olds), list(news))
    for name, o in olds.items():
        n = news.get(name)
        if n is None:
            continue
        yield from _differs(BREAK, f"struct {name}", "size", o.size, n.size)
        yield from _differs(BREAK, f"struct {name}", "bytes the kernel reads", o.copied_in, n.copied_in)
        yield from _prose(f"struct {name}", o.doc, n.doc)
        yield from _fields(name, o.fields, n.fields)


def _fields(struct: str, old: Sequence[Field], new: Sequence[Field]) -> Iterable[Change]:
    olds = {f.name: f for f in old}
    news = {f.name: f for f in new}
    yield from _added_removed("field", [f"{struct}.{f}" for f in olds], [f"{struct}.{f}" for f in news])
    for name, o in olds.items():
        item = f"field {struct}.{name}"
        n = news.get(name)
        if n is None:
            continue
        if o.ctype.name != n.ctype.name:
            how = [f"type {o.ctype.name} -> {n.ctype.name}"]
            if o.size != n.size:
                how.append(f"size {o.size} -> {n.size}")
            if o.ctype.signed != n.ctype.signed:
                how.append(f"{_sign(o.ctype.signed)} -> {_sign(n.ctype.signed)}")
            yield Change(BREAK, item, ", ".join(how))
        else:  # a struct member whose struct changed size
            yield from _differs(BREAK, item, "size", o.size, n.size)
        yield from _differs(BREAK, item, "offset", o.offset, n.offset)
        yield from _differs(BREAK, item, "direction", o.dir, n.dir)
        yield from _differs(DOCS, item, "comment", repr(o.comment), repr(n.comment))
        yield from _differs(DOCS, item, "flag set", o.flags, n.flags)
        yield from _prose(item, o.doc, n.doc)


def _sign(signed: bool) -> str:
    return "signed" if signed else "unsigned"


def _flags(old: Spec, new: Spec) -> Iterable[Change]:
    olds = {fs.name: fs for fs in old.flags}
    yield from _added_removed("flag set", list(olds), [fs.name for fs in new.flags])
    for fs in new.flags:
        o = olds.get(fs.name)
        if o is None:
            continue
        if (o.struct, o.field) != (fs.struct, fs.field):
            yield Change(BREAK, f"flag set {fs.name}", f"field {o.struct}.{o.field} -> {fs.struct}.{fs.field}")
        yield from _prose(f"flag set {fs.name}", o.doc, fs.doc)
        before = {f.name: f for f in o.values}
        for f in fs.values:
            if f.name in before:
                yield from _since(f"flag {f.name}", before[f.name].since, f.since)
                yield from _prose(f"flag {f.name}", before[f.name].doc, f.doc)
                yield from _links(f"flag {f.name}", before[f.name].behaviours, f.behaviours)


def _feature(old: Spec, new: Spec) -> Iterable[Change]:
    o, n = old.feature, new.feature
    if o.name != n.name:
        return  # shown as a removed and an added feature
    if (o.struct, o.field) != (n.struct, n.field):
        yield Change(BREAK, f"feature {n.name}", f"reported in {o.struct}.{o.field} -> {n.struct}.{n.field}")
    yield from _since(f"feature {n.name}", o.since, n.since)
    yield from _prose(f"feature {n.name}", o.doc, n.doc)
    yield from _links(f"feature {n.name}", o.behaviours, n.behaviours)


def _errors(old: Spec, new: Spec) -> Iterable[Change]:
    """ERRORS entries have no name: an errno may have several.  Entries are
    paired by errno and what they say or verify; an unpaired entry whose
    behaviours another entry of the same errno carries was only regrouped."""
    pairs, gone, came = _pair_errors(list(old.errors), list(new.errors))
    for o, n in pairs:
        item = f"error {n.errno}"
        yield from _since(item, o.since, n.since)
        yield from _prose(item, o.doc, n.doc)
        yield from _links(item, o.behaviours, n.behaviours)
    covered_new = {(e.errno, b) for e in new.errors for b in e.behaviours}
    covered_old = {(e.errno, b) for e in old.errors for b in e.behaviours}
    for e in gone:
        regrouped = any(x.errno == e.errno for x in new.errors) and \
            all((e.errno, b) in covered_new for b in e.behaviours)
        yield Change(DOCS if regrouped else BREAK, f"error {e.errno}",
                     ("entry merged into another: " if regrouped else "removed: ") + _first_line(e.doc))
    for e in came:
        regrouped = any(x.errno == e.errno for x in old.errors) and \
            all((e.errno, b) in covered_old for b in e.behaviours)
        yield Change(DOCS if regrouped else EXTENSION, f"error {e.errno}",
                     ("entry split from another: " if regrouped else "added: ") + _first_line(e.doc))


def _pair_errors(old: list[Error], new: list[Error]) -> tuple[list[tuple[Error, Error]], list[Error], list[Error]]:
    """Pairs, the closest first; then the old entries and the new ones left over."""
    alike = (
        lambda o, n: o.behaviours == n.behaviours and o.doc.paragraphs == n.doc.paragraphs,
        lambda o, n: set(o.behaviours) == set(n.behaviours),
        lambda o, n: o.doc.paragraphs == n.doc.paragraphs,
        lambda o, n: bool(set(o.behaviours) & set(n.behaviours)),
    )
    pairs = []
    for same in alike:
        for o in list(old):
            match = next((n for n in new if n.errno == o.errno and same(o, n)), None)
            if match is not None:
                pairs.append((o, match))
                old.remove(o)
                new.remove(match)
    return pairs, old, new


def _precedence(old: Spec, new: Spec) -> Iterable[Change]:
    o = [s.condition for s in old.precedence]
    n = [s.condition for s in new.precedence]
    for c in o:
        if c not in n:
            yield Change(BREAK, f"precedence step {c}", "removed")
    for c in n:
        if c not in o:
            yield Change(EXTENSION, f"precedence step {c}", "added")
    common_old = [c for c in o if c in n]
    common_new = [c for c in n if c in o]
    if common_old != common_new:
        first = next(i for i, (a, b) in enumerate(zip(common_old, common_new, strict=True)) if a != b)
        yield Change(BREAK, "precedence", f"the kernel now checks {common_new[first]} before {common_old[first]}: "
                     "calls failing both get another errno")
    steps = {s.condition: s for s in old.precedence}
    for s in new.precedence:
        before = steps.get(s.condition)
        if before is not None and (before.stage, before.behaviour) != (s.stage, s.behaviour):
            yield Change(DOCS, f"precedence step {s.condition}",
                         f"{before.stage}/{before.behaviour} -> {s.stage}/{s.behaviour}")


def _behaviours(old: Spec, new: Spec) -> Iterable[Change]:
    horizon = max(_versions(old))
    olds = {b.id: b for b in old.behaviours}
    news = {b.id: b for b in new.behaviours}
    yield from _added_removed("behaviour", list(olds), list(news), lambda id_: f"added: {news[id_].summary}")
    for id_, o in olds.items():
        item = f"behaviour {id_}"
        n = news.get(id_)
        if n is None:
            continue
        yield from _expectations(item, o.expect, n.expect, horizon)
        for key in ("summary", "source", "requires", "unobservable"):
            yield from _differs(DOCS, item, key, repr(getattr(o, key)), repr(getattr(n, key)))
        yield from _prose(item, o.doc, n.doc)


def _expectations(item: str, old: Sequence[Expectation], new: Sequence[Expectation],
                  horizon: Version) -> Iterable[Change]:
    """Kernel by kernel: the versions where either side changes cut the line
    into pieces, each covered by at most one expectation per side."""
    cuts = sorted({v for e in (*old, *new) for v in (e.kernels.since, e.kernels.until) if v is not None})
    pieces = list(zip([None, *cuts], [*cuts, None], strict=True))
    found: list[tuple[str, str, KernelRange]] = []
    for lo, hi in pieces:
        o, n = _covering(old, lo, hi), _covering(new, lo, hi)
        if o is None and n is None or (o is not None and n is not None and _outcome(o) == _outcome(n)):
            continue
        newer = lo is not None and horizon < lo
        unseen = f", newer than any kernel the old spec names ({horizon})" if newer else ""
        if o is None:
            kind, what = EXTENSION, f"now covers {{range}}{unseen}: {n.describe()}"
        elif n is None:
            kind, what = (EXTENSION if newer else BREAK), f"no longer covers {{range}}{unseen} (was {o.describe()})"
        else:
            changed = _changed(o, n)
            # An outcome the old spec left unstated (errno aside: there None
            # is success) and the new one states is more knowledge, not a change.
            refines = "errno" not in changed and all(a is None for a, _ in changed.values())
            kind = EXTENSION if newer or refines else BREAK
            if refines and not newer:
                what = f"now states, on {{range}}: {_states(changed)}"
            else:
                what = f"{'new range for' if newer else 'on'} {{range}}{unseen}: {_states(changed)}"
        if found and found[-1][:2] == (kind, what) and found[-1][2].until == lo:
            found[-1] = (kind, what, KernelRange(found[-1][2].since, hi))
        else:
            found.append((kind, what, KernelRange(lo, hi)))
    for kind, what, kernels in found:
        yield Change(kind, item, what.replace("{range}", _kernels(kernels)))


def _covering(expects: Sequence[Expectation], lo: Version | None, hi: Version | None) -> Expectation | None:
    for e in expects:
        r = e.kernels
        starts = r.since is None or (lo is not None and not lo < r.since)
        ends = r.until is None or (hi is not None and not r.until < hi)
        if starts and ends:
            return e
    return None


def _outcome(e: Expectation) -> tuple[str | None, ...]:
    return tuple(getattr(e, k) for k in OUTCOME)


def _changed(o: Expectation, n: Expectation) -> dict[str, tuple[str | None, str | None]]:
    return {k: (getattr(o, k), getattr(n, k)) for k in OUTCOME if getattr(o, k) != getattr(n, k)}


def _states(changed: dict[str, tuple[str | None, str | None]]) -> str:
    parts = []
    for key, (a, b) in changed.items():
        if a is None and key != "errno":
            parts.append(f"{key} {b}")
        else:
            parts.append(f"{key} {a or (0 if key == 'errno' else '-')} -> {b or (0 if key == 'errno' else '-')}")
    return ", ".join(parts)


def _kernels(r: KernelRange) -> str:
    return f"kernels {r}" if r.since or r.until else str(r)


def _versions(spec: Spec) -> Iterable[Version]:
    """Every kernel version the spec names: what it has seen."""
    yield spec.since
    yield spec.feature.since
    yield from (h.version for h in spec.history)
    yield from (f.since for fs in spec.flags for f in fs.values if f.since)
    yield from (e.since for e in spec.errors if e.since)
    for b in spec.behaviours:
        for e in b.expect:
            yield from (v for v in (e.kernels.since, e.kernels.until) if v is not None)


def _history(old: Spec, new: Spec) -> Iterable[Change]:
    before = {h.version: h for h in old.history}
    after = {h.version: h for h in new.history}
    for v, h in after.items():
        if v not in before:
            yield Change(DOCS, f"history {v}", "added: " + _first_line(h.doc))
        else:
            yield from _prose(f"history {v}", before[v].doc, h.doc)
    for v in before:
        if v not in after:
            yield Change(DOCS, f"history {v}", "removed")


# --- small pieces -----------------------------------------------------------------

def _since(item: str, old: Version | None, new: Version | None) -> Iterable[Change]:
    """A later `since` takes kernels away from what the old spec promised;
    an earlier one adds kernels."""
    if old == new:
        return
    later = old is None or (new is not None and old < new)
    yield Change(BREAK if later else EXTENSION, item,
                 f"since {old or 'always'} -> {new or 'always'}")


def _prose(item: str, old: Prose, new: Prose) -> Iterable[Change]:
    if old.paragraphs == new.paragraphs:
        return
    a = [plain_line(line) for p in old.paragraphs for line in p.lines]
    b = [plain_line(line) for p in new.paragraphs for line in p.lines]
    if a == b:
        yield Change(DOCS, item, "paragraphs regrouped")
        return
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if i >= len(a):
        yield Change(DOCS, item, f"sentence added: {_clip(b[i])!r}")
    elif i >= len(b) or len(a) > len(b) and a[i + 1:] == b[i:]:
        yield Change(DOCS, item, f"sentence removed: {_clip(a[i])!r}")
    elif len(b) > len(a) and a[i:] == b[i + 1:]:
        yield Change(DOCS, item, f"sentence added: {_clip(b[i])!r}")
    else:
        was, now = _words_changed(a[i], b[i])
        yield Change(DOCS, item, f"text: {was!r} -> {now!r}")


def _words_changed(old: str, new: str, context: int = 3) -> tuple[str, str]:
    """The changed words of a sentence, with a few words around them."""
    a, b = old.split(), new.split()
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return _clip(old), _clip(new)
    lo_a, hi_a = max(ops[0][1] - context, 0), min(ops[-1][2] + context, len(a))
    lo_b, hi_b = max(ops[0][3] - context, 0), min(ops[-1][4] + context, len(b))

    def show(words: list[str], lo: int, hi: int) -> str:
        text = ("..." if lo > 0 else "") + " ".join(words[lo:hi])
        return _clip(text, 100) if len(text) > 100 else text + ("..." if hi < len(words) else "")

    return show(a, lo_a, hi_a), show(b, lo_b, hi_b)


def _differs(kind: str, item: str, label: str, old: object, new: object) -> Iterable[Change]:
    if old != new:
        yield Change(kind, item, f"{label} {old} -> {new}".lstrip())


def _links(item: str, old: Sequence[str], new: Sequence[str]) -> Iterable[Change]:
    if set(old) != set(new):
        plus = sorted(set(new) - set(old))
        minus = sorted(set(old) - set(new))
        how = ", ".join([f"+{b}" for b in plus] + [f"-{b}" for b in minus])
        yield Change(DOCS, item, f"verifying behaviours {how}")


def _added_removed(label: str, old: Sequence[str], new: Sequence[str],
                   added: Callable[[str], str] = lambda _: "added") -> Iterable[Change]:
    """Removing a named thing breaks its users; adding one breaks no one."""
    for x in old:
        if x not in new:
            yield Change(BREAK, f"{label} {x}", "removed")
    for x in new:
        if x not in old:
            yield Change(EXTENSION, f"{label} {x}", added(x))


def _first_line(doc: Prose) -> str:
    return _clip(plain_line(doc.paragraphs[0].lines[0]))


def _clip(text: str, width: int = 72) -> str:
    text = text.replace("\\-", "-")
    return text if len(text) <= width else text[: width - 3] + "..."


# --- output ---------------------------------------------------------------------------

def text(old: str, new: str, changes: Sequence[Change]) -> str:
    lines = [f"old: {old}", f"new: {new}", ""]
    for kind in (BREAK, EXTENSION, DOCS):
        group = [c for c in changes if c.kind == kind]
        if group:
            lines.append(f"{TITLES[kind]} ({len(group)}):")
            lines += [f"  {c.item}: {c.what}" for c in group]
            lines.append("")
    v = verdict(changes)
    lines.append(f"verdict: {TITLES.get(v, 'no changes')}")
    return "\n".join(lines) + "\n"


def as_json(old: str, new: str, changes: Sequence[Change]) -> str:
    doc = {
        "old": old,
        "new": new,
        "verdict": verdict(changes),
        "counts": {kind: sum(c.kind == kind for c in changes) for kind in (BREAK, EXTENSION, DOCS)},
        "changes": [{"class": c.kind, "item": c.item, "change": c.what} for c in changes],
    }
    return json.dumps(doc, indent=2) + "\n"


def markdown(old: str, new: str, changes: Sequence[Change]) -> str:
    v = verdict(changes)
    lines = [f"### uABI review: {TITLES.get(v, 'no changes')}", "", f"`{old}` → `{new}`", ""]
    for kind in (BREAK, EXTENSION, DOCS):
        group = [c for c in changes if c.kind == kind]
        if group:
            lines += [f"#### {TITLES[kind]} ({len(group)})", ""]
            lines += [f"- {_md_item(c.item)}: {_md(c.what)}" for c in group]
            lines.append("")
    if not changes:
        lines.append("No change to the uABI or its documentation.")
    return "\n".join(lines).rstrip("\n") + "\n"


# Items that name something: the name is shown as code.
SUBJECTS = ("request code", "ioctl number", "ioctl type", "flag set", "precedence step", "constant",
            "flag", "feature", "struct", "field", "error", "behaviour", "history", "ioctl", "architecture")


def _md_item(item: str) -> str:
    for subject in SUBJECTS:
        if item.startswith(subject + " "):
            return f"{subject} `{item[len(subject) + 1:]}`"
    return item


def _md(text: str) -> str:
    """Markdown that shows the text as it is: no emphasis, no HTML."""
    text = text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("<", "&lt;")
    return re.sub(r"(?<![\w\\])(_+)", lambda m: "\\_" * len(m.group(1)), text)
