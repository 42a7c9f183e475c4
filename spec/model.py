"""The validated, immutable model of a uABI spec.

Everything downstream (man pages, HTML, cffi bindings, checks, header and
spec reviews) reads these objects and nothing else.  Derived numbers (field
offsets, struct sizes, request codes, flag values) are properties computed
here from the spec's own data, so no renderer can disagree with another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import total_ordering

from .prose import Prose


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse "6.8" or a kernel release such as "6.18.44-fc-v657"."""
        parts = text.split("-", 1)[0].split(".")
        return cls(int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class KernelRange:
    """[since, until): until is exclusive; None means unbounded."""

    since: Version | None
    until: Version | None

    def covers(self, version: Version) -> bool:
        if self.since is not None and version < self.since:
            return False
        if self.until is not None and not version < self.until:
            return False
        return True

    def overlaps(self, other: KernelRange) -> bool:
        lo = max((r for r in (self.since, other.since) if r is not None), default=None)
        hi = min((r for r in (self.until, other.until) if r is not None), default=None)
        return lo is None or hi is None or lo < hi

    def __str__(self) -> str:
        if self.since and self.until:
            return f"{self.since} to {self.until} (exclusive)"
        if self.since:
            return f"since {self.since}"
        if self.until:
            return f"before {self.until}"
        return "all kernels"


@dataclass(frozen=True)
class CType:
    """A C type of a uABI struct member: a fixed-width integer, an array of
    them, or another struct of the spec."""

    name: str  # as written in the spec: "__u64", "__u64[3]", "struct uffdio_range"
    size: int
    align: int
    signed: bool
    count: int = 1  # array length; 1 for a scalar
    struct: str | None = None

    @property
    def base(self) -> str:
        return self.name.split("[", 1)[0]

    def declarator(self, name: str) -> str:
        """The C declaration of a member of this type."""
        if self.count > 1 or "[" in self.name:
            return f"{self.base} {name}[{self.count}]"
        return f"{self.name} {name}"


@dataclass(frozen=True)
class Field:
    name: str
    ctype: CType
    dir: str
    offset: int
    doc: Prose
    comment: str | None = None
    flags: str | None = None
    behaviours: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.ctype.size


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    doc: Prose
    fields: tuple[Field, ...]
    copied_in: int | None = None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def align(self) -> int:
        return max(f.ctype.align for f in self.fields)


@dataclass(frozen=True)
class Ioc:
    """The _IOC encoding of request codes on the architectures listed."""

    doc: Prose
    arches: tuple[str, ...]
    nrbits: int
    typebits: int
    sizebits: int
    dirbits: int
    dirs: tuple[tuple[str, int], ...]

    def encode(self, dirs: tuple[str, ...], type_: int, nr: int, size: int) -> int:
        d = 0
        for name, value in self.dirs:
            if name in dirs:
                d |= value
        typeshift = self.nrbits
        sizeshift = typeshift + self.typebits
        dirshift = sizeshift + self.sizebits
        return nr | type_ << typeshift | size << sizeshift | d << dirshift


@dataclass(frozen=True)
class Ioctl:
    name: str
    type_name: str
    type_value: int
    nr_name: str | None
    nr: int
    dirs: tuple[str, ...]
    arg: Struct | None
    doc: Prose
    request: int
    summary: str | None = None

    @property
    def macro(self) -> str:
        """The header's spelling, e.g. "_IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)"."""
        nr = self.nr_name or f"0x{self.nr:02X}"
        ioc = {(): "_IO", ("read",): "_IOR", ("write",): "_IOW"}.get(
            tuple(sorted(self.dirs)), "_IOWR"
        )
        if self.arg is None:
            return f"{ioc}({self.type_name}, {nr})"
        return f"{ioc}({self.type_name}, {nr}, struct {self.arg.name})"


@dataclass(frozen=True)
class RangeIoctl:
    struct: str
    field: str
    bit: int
    doc: Prose
    behaviours: tuple[str, ...] = ()

    @property
    def value(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True)
class Flag:
    name: str
    bit: int
    doc: Prose
    behaviours: tuple[str, ...]
    since: Version | None = None

    @property
    def value(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True)
class FlagSet:
    name: str
    struct: str
    field: str
    doc: Prose
    values: tuple[Flag, ...]

    @property
    def mask(self) -> int:
        m = 0
        for f in self.values:
            m |= f.value
        return m


@dataclass(frozen=True)
class Feature:
    name: str
    bit: int
    struct: str
    field: str
    since: Version
    doc: Prose
    behaviours: tuple[str, ...]

    @property
    def value(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True)
class Constant:
    name: str
    value: int
    doc: Prose


@dataclass(frozen=True)
class Error:
    errno: str
    doc: Prose
    behaviours: tuple[str, ...]
    since: Version | None = None


@dataclass(frozen=True)
class Expectation:
    """What the kernel does for one behaviour on the kernels of `kernels`.

    `errno` None means the call returns 0.  `instead` is set where `errno` is
    documented but unreachable, and names what the kernel returns.
    """

    kernels: KernelRange
    errno: str | None = None
    instead: str | None = None
    move: str | None = None
    memory: str | None = None
    wake: str | None = None
    huge: str | None = None
    swap: str | None = None
    feature: str | None = None
    ioctl_bit: str | None = None

    def describe(self) -> str:
        parts = [f"errno={self.errno or 0}"]
        for key in ("instead", "move", "memory", "wake", "huge", "swap", "feature", "ioctl_bit"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value}")
        return " ".join(parts)


@dataclass(frozen=True)
class Behaviour:
    id: str
    summary: str
    source: str
    doc: Prose
    expect: tuple[Expectation, ...]
    requires: tuple[str, ...] = ()
    unobservable: str | None = None  # why it cannot be seen from user space

    def expectation_for(self, version: Version) -> Expectation | None:
        for e in self.expect:
            if e.kernels.covers(version):
                return e
        return None

    @property
    def since(self) -> Version | None:
        versions = [e.kernels.since for e in self.expect]
        if any(v is None for v in versions):
            return None
        return min(v for v in versions if v is not None)

    @property
    def changes(self) -> tuple[Version, ...]:
        """The kernel versions at which the expected outcome changes."""
        points = {e.kernels.since for e in self.expect} | {e.kernels.until for e in self.expect}
        lo = self.since
        return tuple(sorted(v for v in points if v is not None and (lo is None or lo < v)))


@dataclass(frozen=True)
class Step:
    """One check of the order of checks.

    The stages run call, range, vma, page, result; a page step is made for
    each page in address order.  With the mode flag `unless` set, the check
    does not fail: the behaviour `otherwise` decides instead (a success
    counts the page as moved), or, without one, the check is passed over.
    """

    condition: str
    stage: str
    behaviour: str
    unless: str | None = None
    otherwise: str | None = None


@dataclass(frozen=True)
class Claim:
    """A performance claim made about the interface, which `uffd-uabi
    bench` measures; its id names the benchmark."""

    id: str
    source: str
    doc: Prose


@dataclass(frozen=True)
class HistoryEntry:
    version: Version
    doc: Prose


@dataclass(frozen=True)
class Note:
    doc: Prose
    behaviours: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bug:
    doc: Prose
    behaviour: str | None = None


@dataclass(frozen=True)
class PageRef:
    page: str
    section: str


@dataclass(frozen=True)
class TypeCode:
    name: str
    value: int
    doc: Prose


@dataclass(frozen=True)
class Spec:
    path: str
    name: str
    doc: Prose
    header: str
    date: str
    since: Version
    commit: str | None
    ioc: Ioc
    types: tuple[TypeCode, ...]
    ioctl: Ioctl
    range_ioctl: RangeIoctl
    struct: Struct
    flags: tuple[FlagSet, ...]
    feature: Feature
    return_value: Prose
    errors: tuple[Error, ...]
    precedence_doc: Prose
    precedence: tuple[Step, ...]
    behaviours: tuple[Behaviour, ...]
    history: tuple[HistoryEntry, ...]
    bugs: tuple[Bug, ...]
    notes: tuple[Note, ...]
    see_also: tuple[PageRef, ...]
    see_also_path: str
    context_structs: tuple[Struct, ...]
    context_ioctls: tuple[Ioctl, ...]
    constants: tuple[Constant, ...]
    precedence_success: str | None = None  # the behaviour of a call no check stops
    claims: tuple[Claim, ...] = ()
    _by_id: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def behaviour(self, id_: str) -> Behaviour:
        if not self._by_id:
            self._by_id.update({b.id: b for b in self.behaviours})
        return self._by_id[id_]

    @property
    def structs(self) -> tuple[Struct, ...]:
        """The subject struct and the context structs, dependencies first."""
        return self.context_structs + (self.struct,)

    @property
    def ioctls(self) -> tuple[Ioctl, ...]:
        return (self.ioctl,) + self.context_ioctls

    def struct_named(self, name: str) -> Struct:
        for s in self.structs:
            if s.name == name:
                return s
        raise KeyError(name)

    def flagset(self, name: str) -> FlagSet:
        for fs in self.flags:
            if fs.name == name:
                return fs
        raise KeyError(name)

    def cited(self) -> set[str]:
        """The behaviours some entry of the page stands for (an error, a flag,
        the feature, a field, a note, a bug): the rest need their own words."""
        ids = {i for e in self.errors for i in e.behaviours}
        ids |= {i for fs in self.flags for f in fs.values for i in f.behaviours}
        ids |= set(self.feature.behaviours) | set(self.range_ioctl.behaviours)
        ids |= {i for f in self.struct.fields for i in f.behaviours}
        ids |= {i for n in self.notes for i in n.behaviours}
        ids |= {b.behaviour for b in self.bugs if b.behaviour}
        return ids

    def values(self) -> dict[str, int]:
        """Every named number of the spec: what a C header must define."""
        out: dict[str, int] = {}
        for t in self.types:
            out[t.name] = t.value
        for i in self.ioctls:
            if i.nr_name:
                out[i.nr_name] = i.nr
            out[i.name] = i.request
        for fs in self.flags:
            for f in fs.values:
                out[f.name] = f.value
        out[self.feature.name] = self.feature.value
        for c in self.constants:
            out[c.name] = c.value
        return out
