"""What the schema cannot say: every name unique, every reference resolving,
every bit inside its field, every offset the one the C types give, every
version range sane.  Builds the model as it checks, so that a model that
exists is a model that passed.
"""

from __future__ import annotations

from typing import Any

from . import prose
from .ctypes import layout, scalar
from .errors import SpecError
from .model import (
    Behaviour,
    Bug,
    Claim,
    Constant,
    CType,
    Error,
    Expectation,
    Feature,
    Field,
    Flag,
    FlagSet,
    HistoryEntry,
    Ioc,
    Ioctl,
    KernelRange,
    Note,
    PageRef,
    RangeIoctl,
    Spec,
    Step,
    Struct,
    TypeCode,
    Version,
)
from .yamlpos import Located, Path

EXPECT_KEYS = ("errno", "instead", "move", "memory", "wake", "huge", "swap", "feature")


class _Builder:
    def __init__(self, data: dict[str, Any], where: Located) -> None:
        self.data = data
        self.where = where
        self.names: dict[str, Path] = {}
        self.ids: set[str] = set()

    def fail(self, path: Path, message: str, key: bool = False) -> SpecError:
        return SpecError(self.where.at(path, key=key), message)

    # --- pieces -------------------------------------------------------------
    def doc(self, path: Path) -> prose.Prose:
        text = _get(self.data, path)
        try:
            return prose.parse(text)
        except prose.ProseError as exc:
            pos = self.where.at(path)
            block = _is_block(text)
            line = pos.line + (1 + exc.line if block else 0)
            col = pos.col + (2 if block else 0) if not block else 1
            raise SpecError(type(pos)(pos.path, line, col), f"doc: {exc}") from None

    def version(self, path: Path) -> Version:
        text = _get(self.data, path)
        v = Version.parse(text)
        if v.major < 2 or v.major > 99 or v.minor > 99:
            raise self.fail(path, f"{text!r} is not a plausible Linux version")
        return v

    def claim(self, name: str, path: Path) -> None:
        """Every C name of the spec is defined once."""
        if name in self.names:
            first = self.where.at(self.names[name])
            raise self.fail(path, f"{name} is already defined at line {first.line}")
        self.names[name] = path

    def structs(self) -> dict[str, Struct]:
        out: dict[str, Struct] = {}
        entries = [(("context", "structs", i), s) for i, s in enumerate(self.data["context"]["structs"])]
        entries.append((("struct",), self.data["struct"]))
        for path, raw in entries:
            self.claim("struct " + raw["name"], path + ("name",))
            out[raw["name"]] = self.struct(path, raw, out)
        return out

    def struct(self, path: Path, raw: dict[str, Any], known: dict[str, Struct]) -> Struct:
        seen: set[str] = set()
        types: list[CType] = []
        for i, f in enumerate(raw["fields"]):
            fpath = path + ("fields", i)
            if f["name"] in seen:
                raise self.fail(fpath + ("name",), f"duplicate field {f['name']!r} in struct {raw['name']}")
            seen.add(f["name"])
            types.append(self.ctype(fpath + ("type",), f["type"], known))
        offsets, size = layout(types)
        fields = []
        for i, (f, t, off) in enumerate(zip(raw["fields"], types, offsets, strict=False)):
            fpath = path + ("fields", i)
            if "offset" in f and f["offset"] != off:
                raise self.fail(fpath + ("offset",),
                                f"{raw['name']}.{f['name']}: offset {f['offset']} contradicts the types "
                                f"(the C layout puts it at {off})")
            if off != (offsets[i - 1] + types[i - 1].size if i else 0):
                raise self.fail(fpath, f"{raw['name']}.{f['name']}: padding before the field; "
                                "a uABI struct must have none")
            refs = self.refs(fpath + ("behaviours",), self.ids) if "behaviours" in f else ()
            fields.append(Field(f["name"], t, f["dir"], off, self.doc(fpath + ("doc",)),
                                f.get("comment"), f.get("flags"), refs))
        if raw["size"] != size:
            raise self.fail(path + ("size",), f"struct {raw['name']}: size {raw['size']} contradicts "
                            f"the fields (they add up to {size})")
        copied = raw.get("copied-in")
        if copied is not None:
            ends = {f.offset + f.size for f in fields}
            if copied not in ends or copied > size:
                raise self.fail(path + ("copied-in",), f"copied-in {copied} does not end on a field "
                                f"of struct {raw['name']}")
        return Struct(raw["name"], size, self.doc(path + ("doc",)), tuple(fields), copied)

    def ctype(self, path: Path, name: str, known: dict[str, Struct]) -> CType:
        if name.startswith("struct "):
            sname = name[len("struct "):]
            if sname not in known:
                raise self.fail(path, f"unknown struct {sname!r} (define it before use)")
            s = known[sname]
            return CType(name, s.size, s.align, False, 1, sname)
        base, _, rest = name.partition("[")
        count = int(rest.rstrip("]")) if rest else 1
        size, signed = scalar(base)
        return CType(name, size * count, size, signed, count)

    def field_ref(self, path: Path, structs: dict[str, Struct]) -> tuple[Struct, Field]:
        sname, _, fname = _get(self.data, path).partition(".")
        if sname not in structs:
            raise self.fail(path, f"unknown struct {sname!r}")
        try:
            return structs[sname], structs[sname].field(fname)
        except KeyError:
            raise self.fail(path, f"struct {sname} has no field {fname!r}") from None

    def ioctl(self, path: Path, raw: dict[str, Any], ioc: Ioc, types: dict[str, int],
              structs: dict[str, Struct]) -> Ioctl:
        self.claim(raw["name"], path + ("name",))
        if raw["type"] not in types:
            raise self.fail(path + ("type",), f"unknown ioctl type {raw['type']!r}")
        nr = raw["nr"]
        if nr.get("name"):
            self.claim(nr["name"], path + ("nr", "name"))
        if nr["value"] >= 1 << ioc.nrbits:
            raise self.fail(path + ("nr", "value"), f"nr {nr['value']:#x} does not fit in {ioc.nrbits} bits")
        if types[raw["type"]] >= 1 << ioc.typebits:
            raise self.fail(path + ("type",), f"type {raw['type']} does not fit in {ioc.typebits} bits")
        arg = None
        if "arg" in raw:
            if raw["arg"] not in structs:
                raise self.fail(path + ("arg",), f"unknown struct {raw['arg']!r}")
            arg = structs[raw["arg"]]
            if arg.size >= 1 << ioc.sizebits:
                raise self.fail(path + ("arg",), f"struct {arg.name} is too large for the ioctl size field")
        elif raw["dir"]:
            raise self.fail(path + ("dir",), f"{raw['name']}: a direction needs an argument struct")
        size = arg.size if arg else 0
        request = ioc.encode(tuple(raw["dir"]), types[raw["type"]], nr["value"], size)
        return Ioctl(raw["name"], raw["type"], types[raw["type"]], nr.get("name"), nr["value"],
                     tuple(sorted(raw["dir"])), arg, self.doc(path + ("doc",)), request, raw.get("summary"))

    def expectation(self, path: Path, raw: dict[str, Any]) -> Expectation:
        since = self.version(path + ("since",)) if "since" in raw else None
        until = self.version(path + ("until",)) if "until" in raw else None
        if since is not None and until is not None and not since < until:
            raise self.fail(path + ("until",), f"empty kernel range: until {until} is not after since {since}")
        if raw.get("move") == "-errno" and "errno" not in raw:
            raise self.fail(path + ("move",), "move: -errno needs an errno")
        if raw.get("instead") and "errno" not in raw:
            raise self.fail(path + ("instead",), "instead needs the errno it replaces")
        if not any(k in raw for k in EXPECT_KEYS + ("ioctl-bit",)):
            raise self.fail(path, "an expectation must say something (errno, move, memory, ...)")
        return Expectation(KernelRange(since, until), raw.get("errno"), raw.get("instead"),
                           raw.get("move"), raw.get("memory"), raw.get("wake"), raw.get("huge"),
                           raw.get("swap"), raw.get("feature"), raw.get("ioctl-bit"))

    def behaviours(self) -> tuple[Behaviour, ...]:
        out = []
        ids: dict[str, int] = {}
        for i, raw in enumerate(self.data["behaviours"]):
            path: Path = ("behaviours", i)
            if raw["id"] in ids:
                first = self.where.at(("behaviours", ids[raw["id"]], "id"))
                raise self.fail(path + ("id",), f"duplicate behaviour id {raw['id']!r} "
                                f"(first at line {first.line})")
            ids[raw["id"]] = i
            expect = [self.expectation(path + ("expect", j), e) for j, e in enumerate(raw["expect"])]
            for j, e in enumerate(expect):
                for k in range(j):
                    if e.kernels.overlaps(expect[k].kernels):
                        raise self.fail(path + ("expect", j), f"{raw['id']}: kernel range {e.kernels} "
                                        f"overlaps {expect[k].kernels}")
            reqs = raw.get("requires", [])
            if len(set(reqs)) != len(reqs):
                raise self.fail(path + ("requires",), f"{raw['id']}: a requirement is listed twice")
            out.append(Behaviour(raw["id"], raw["summary"], raw["source"], self.doc(path + ("doc",)),
                                 tuple(expect), tuple(reqs), raw.get("observable")))
        return tuple(out)

    def refs(self, path: Path, ids: set[str]) -> tuple[str, ...]:
        refs = _get(self.data, path)
        refs = refs if isinstance(refs, list) else [refs]
        for j, ref in enumerate(refs):
            p = path + (j,) if isinstance(_get(self.data, path), list) else path
            if ref not in ids:
                raise self.fail(p, f"unknown behaviour {ref!r}")
        return tuple(refs)

    # --- the whole ------------------------------------------------------------
    def build(self) -> Spec:
        d = self.data
        rio = d["ioc"]
        total = rio["nrbits"] + rio["typebits"] + rio["sizebits"] + rio["dirbits"]
        if total != 32:
            raise self.fail(("ioc",), f"the _IOC fields add up to {total} bits, not 32")
        for key, value in rio["dirs"].items():
            if value >= 1 << rio["dirbits"]:
                raise self.fail(("ioc", "dirs", key), f"direction {key}={value} does not fit in {rio['dirbits']} bits")
        ioc = Ioc(self.doc(("ioc", "doc")), tuple(rio["arches"]), rio["nrbits"], rio["typebits"],
                  rio["sizebits"], rio["dirbits"], tuple(sorted(rio["dirs"].items())))

        types: dict[str, int] = {}
        type_codes = []
        for i, t in enumerate(d["types"]):
            self.claim(t["name"], ("types", i, "name"))
            types[t["name"]] = t["value"]
            type_codes.append(TypeCode(t["name"], t["value"], self.doc(("types", i, "doc"))))

        since = self.version(("since",))
        behaviours = self.behaviours()
        ids = self.ids = {b.id for b in behaviours}
        structs = self.structs()

        ioctl = self.ioctl(("ioctl",), d["ioctl"], ioc, types, structs)
        if ioctl.arg is None or ioctl.arg.name != d["struct"]["name"]:
            raise self.fail(("ioctl", "arg"), f"the ioctl's argument must be struct {d['struct']['name']}")
        ctx_ioctls = tuple(self.ioctl(("context", "ioctls", i), raw, ioc, types, structs)
                           for i, raw in enumerate(d["context"]["ioctls"]))

        rpath = ("ioctl", "range-ioctl", "field")
        rs, rf = self.field_ref(rpath, structs)
        if ioctl.nr >= rf.size * 8:
            raise self.fail(rpath, f"bit {ioctl.nr} (1 << {ioctl.nr_name}) does not fit in {rs.name}.{rf.name}")
        rrefs = ("ioctl", "range-ioctl", "behaviours")
        range_ioctl = RangeIoctl(rs.name, rf.name, ioctl.nr, self.doc(("ioctl", "range-ioctl", "doc")),
                                 self.refs(rrefs, ids) if "behaviours" in d["ioctl"]["range-ioctl"] else ())

        flagsets = []
        for i, raw in enumerate(d["flags"]):
            path: Path = ("flags", i)
            fs, ff = self.field_ref(path + ("field",), structs)
            width = ff.size * 8
            bits: dict[int, str] = {}
            values = []
            for j, v in enumerate(raw["values"]):
                vpath = path + ("values", j)
                self.claim(v["name"], vpath + ("name",))
                if v["bit"] >= width:
                    raise self.fail(vpath + ("bit",), f"{v['name']}: bit {v['bit']} is outside the "
                                    f"{width}-bit field {fs.name}.{ff.name}")
                if v["bit"] in bits:
                    raise self.fail(vpath + ("bit",), f"{v['name']}: bit {v['bit']} is already "
                                    f"{bits[v['bit']]}")
                bits[v["bit"]] = v["name"]
                values.append(Flag(v["name"], v["bit"], self.doc(vpath + ("doc",)),
                                   self.refs(vpath + ("behaviours",), ids),
                                   self.version(vpath + ("since",)) if "since" in v else None))
            flagsets.append(FlagSet(raw["name"], fs.name, ff.name, self.doc(path + ("doc",)), tuple(values)))
        names = [fs.name for fs in flagsets]
        for i, s in enumerate(d["struct"]["fields"]):
            if "flags" in s and s["flags"] not in names:
                raise self.fail(("struct", "fields", i, "flags"), f"unknown flag set {s['flags']!r}")

        f = d["feature"]
        self.claim(f["name"], ("feature", "name"))
        fs_, ff_ = self.field_ref(("feature", "field"), structs)
        if f["bit"] >= ff_.size * 8:
            raise self.fail(("feature", "bit"), f"{f['name']}: bit {f['bit']} is outside the "
                            f"{ff_.size * 8}-bit field {fs_.name}.{ff_.name}")
        feature = Feature(f["name"], f["bit"], fs_.name, ff_.name, self.version(("feature", "since")),
                          self.doc(("feature", "doc")), self.refs(("feature", "behaviours"), ids))

        constants = []
        for i, c in enumerate(d["context"]["constants"]):
            self.claim(c["name"], ("context", "constants", i, "name"))
            constants.append(Constant(c["name"], c["value"], self.doc(("context", "constants", i, "doc"))))

        by_id = {b.id: b for b in behaviours}
        errors = []
        for i, e in enumerate(d["errors"]):
            path = ("errors", i)
            refs = self.refs(path + ("behaviours",), ids)
            for ref in refs:
                named = {x.errno for x in by_id[ref].expect} | {x.instead for x in by_id[ref].expect}
                if e["errno"] not in named:
                    raise self.fail(path + ("errno",), f"{e['errno']}: its behaviour {ref} never expects it "
                                    f"(it expects {', '.join(sorted(n for n in named if n)) or 'success'})")
            errors.append(Error(e["errno"], self.doc(path + ("doc",)), refs,
                                self.version(path + ("since",)) if "since" in e else None))

        steps = []
        conditions: set[str] = set()
        flag_names = {f.name for fs in flagsets for f in fs.values}
        for i, s in enumerate(d["precedence"]["steps"]):
            path = ("precedence", "steps", i)
            if s["condition"] in conditions:
                raise self.fail(path + ("condition",), f"condition {s['condition']!r} is listed twice")
            conditions.add(s["condition"])
            self.refs(path + ("behaviour",), ids)
            if "unless" in s and s["unless"] not in flag_names:
                raise self.fail(path + ("unless",), f"unless: {s['unless']} is not a flag of the spec")
            if "otherwise" in s:
                if "unless" not in s:
                    raise self.fail(path + ("otherwise",), "otherwise needs the flag (unless) that selects it")
                self.refs(path + ("otherwise",), ids)
            steps.append(Step(s["condition"], s["stage"], s["behaviour"], s.get("unless"), s.get("otherwise")))
        stages = ["call", "range", "vma", "page", "result"]
        for i in range(1, len(steps)):
            if stages.index(steps[i].stage) < stages.index(steps[i - 1].stage):
                raise self.fail(("precedence", "steps", i, "stage"), f"stage {steps[i].stage} comes after "
                                f"{steps[i - 1].stage}: the stages run {', '.join(stages)}")
        success = None
        if "success" in d["precedence"]:
            success = self.refs(("precedence", "success"), ids)[0]

        history = []
        last: Version | None = None
        for i, _h in enumerate(d["history"]):
            v = self.version(("history", i, "version"))
            if last is not None and not last < v:
                raise self.fail(("history", i, "version"), f"history must be in rising order ({v} after {last})")
            last = v
            history.append(HistoryEntry(v, self.doc(("history", i, "doc"))))
        if history[0].version != since:
            raise self.fail(("history", 0, "version"), f"the history starts at {history[0].version}, "
                            f"but the interface dates from {since}")
        if feature.since != since:
            raise self.fail(("feature", "since"), f"the feature dates from {feature.since}, the ioctl from {since}")

        bugs = tuple(Bug(self.doc(("bugs", i, "doc")),
                         self.refs(("bugs", i, "behaviour"), ids)[0] if "behaviour" in b else None)
                     for i, b in enumerate(d.get("bugs", [])))
        notes = tuple(Note(self.doc(("notes", i, "doc")),
                           self.refs(("notes", i, "behaviours"), ids) if "behaviours" in n else ())
                      for i, n in enumerate(d.get("notes", [])))
        claims = []
        for i, c in enumerate(d.get("claims", [])):
            if any(c["id"] == other.id for other in claims):
                raise self.fail(("claims", i, "id"), f"claim {c['id']!r} is listed twice")
            claims.append(Claim(c["id"], c["source"], self.doc(("claims", i, "doc"))))
        see_also = tuple(PageRef(p["page"], p["section"]) for p in d["see-also"])
        seen_pages = set()
        for i, p in enumerate(see_also):
            if (p.page, p.section) in seen_pages:
                raise self.fail(("see-also", i), f"{p.page}({p.section}) is listed twice")
            seen_pages.add((p.page, p.section))

        return Spec(
            path=self.where.filename, name=d["name"], doc=self.doc(("doc",)), header=d["header"],
            date=d["date"], since=since, commit=d.get("commit"), ioc=ioc, types=tuple(type_codes),
            ioctl=ioctl, range_ioctl=range_ioctl, struct=structs[d["struct"]["name"]],
            flags=tuple(flagsets), feature=feature, return_value=self.doc(("return-value", "doc")),
            errors=tuple(errors), precedence_doc=self.doc(("precedence", "doc")), precedence=tuple(steps),
            behaviours=behaviours, history=tuple(history), bugs=bugs, notes=notes, see_also=see_also,
            see_also_path=d["see-also-path"],
            context_structs=tuple(s for name, s in structs.items() if name != d["struct"]["name"]),
            context_ioctls=ctx_ioctls, constants=tuple(constants), precedence_success=success, claims=tuple(claims),
        )


def _get(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _is_block(text: str) -> bool:
    return "\n" in text


def build(data: dict[str, Any], where: Located) -> Spec:
    return _Builder(data, where).build()
