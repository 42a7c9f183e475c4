"""Run the conformance suite on other kernels in QEMU and show one table:
behaviour x kernel.

The running kernel is always a column, checked directly.  Every other
kernel (--debian: Debian's newest of each major line given, or of every
line the registry has; --kernel: an image you built) is booted with
virtme-ng, the host's root file system shared read-only, and runs this
project's `conform` with the host's interpreter; each writes its results
into its own directory next to the matrix JSON.  TCG by default: nested
KVM can hang at boot (--kvm tries it and falls back).  Progress goes to
stderr, the table to stdout.

The spec's version notes are held against the columns: a behaviour seen
on a kernel the spec says predates it, a spec boundary that a column
contradicts, and a behaviour whose outcome differs between two kernels on
the same side of every boundary of the spec (an unexplained difference)
are reported.  Exit status 0 when every column ran and conforms and no
such finding stands, 1 otherwise, 2 for a usage error, 3 when no VM can be booted here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spec import load
from spec.model import Behaviour, Spec, Version
from tools import debian
from tools.output import write_atomic

from . import kernels, vm
from .judge import SEVERITY, Status
from .kernels import Kernel, KernelError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "build" / "matrix" / "matrix.json"
DEFAULT_CACHE = ROOT / ".cache"
DEFAULT_TIMEOUT = 1800.0      # seconds for one kernel: boot and every check, under TCG
DEFAULT_BOOT_TIMEOUT = 600.0  # seconds until the guest runs the command
KVM_BOOT_TIMEOUT = 90.0       # a KVM boot that takes longer is taken for hung
DEFAULT_SWAP_MB = 256
# Opt-ins that change only the guest, a VM thrown away after the run.
GUEST_OPTIONS = ("ksm",)
RESULTS = "results.json"
KTAP = "results.ktap"
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

# The terminal table's codes.
CODES = {Status.PASS: "ok", Status.FAIL: "FAIL", Status.SKIP: "skip", Status.XFAIL: "xfail",
         Status.TIMEOUT: "TIME", Status.ERROR: "ERR"}
NOT_RUN = "n/a"  # the code of every cell of a kernel that gave no results
OBSERVED = (Status.PASS, Status.FAIL, Status.XFAIL)  # the statuses that carry an observation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debian", metavar="LINES",
                        help="Debian kernels: major lines such as 6.1,6.12,7.3, or 'all' for every line "
                             "the registry has (the newest generic amd64 image of each)")
    parser.add_argument("--kernel", metavar="PATH", type=Path, action="append", default=[],
                        help="a kernel image you built (bzImage); repeatable")
    parser.add_argument("--json", metavar="FILE", type=Path, default=DEFAULT_JSON,
                        help="the matrix as JSON; each kernel's own results go to a directory beside it "
                             "(default: build/matrix/matrix.json)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                        help=f"time limit of one kernel, boot and checks (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--boot-timeout", metavar="SECONDS", type=float, default=DEFAULT_BOOT_TIMEOUT,
                        help=f"time limit until a guest runs the checks (default {DEFAULT_BOOT_TIMEOUT:g})")
    parser.add_argument("--jobs", metavar="N", type=int, default=os.cpu_count() or 1,
                        help="kernels booted at once (default: the number of cores)")
    parser.add_argument("--cpus", metavar="N", type=int, default=1, help="CPUs of each guest (default 1)")
    parser.add_argument("--memory", metavar="SIZE", default="2G", help="memory of each guest (default 2G)")
    parser.add_argument("--swap", metavar="MB", type=int, default=DEFAULT_SWAP_MB,
                        help="swap of each guest, on a scratch disk, so the swap behaviours are checked "
                             f"(default {DEFAULT_SWAP_MB}; 0: none)")
    parser.add_argument("--append", metavar="ARGS", action="append", default=[],
                        help="kernel command line for the guests, e.g. transparent_hugepage=madvise to match "
                             "a host whose default differs from Debian's 'always' (repeatable)")
    parser.add_argument("--cache", metavar="DIR", type=Path, default=DEFAULT_CACHE,
                        help="where Debian's packages (DIR/debian) and the prepared kernels (DIR/kernels) "
                             "are kept between runs (default: .cache of the project)")
    parser.add_argument("--kvm", action="store_true",
                        help="try KVM first (falls back to TCG when a KVM boot does not finish in "
                             f"{KVM_BOOT_TIMEOUT:g} s: nested KVM can hang)")


# --- one column ---------------------------------------------------------------------

@dataclass
class Column:
    kernel: Kernel
    outdir: Path
    accel: str = "host"
    boot: float | None = None
    checks: float | None = None
    wall: float | None = None
    exit_code: int | None = None
    problem: str | None = None
    record: dict[str, Any] | None = None   # conform's JSON
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def label(self) -> str:
        k = self.kernel
        return f"host {k.version}" if k.is_host else k.label

    @property
    def ran(self) -> bool:
        return self.record is not None


@dataclass(frozen=True)
class Cell:
    status: Status
    reason: str = ""
    expected: str = ""
    observed: str = ""

    @property
    def outcome(self) -> str | None:
        """What the kernel did, comparable between columns; None without an observation."""
        return f"{self.status.value}: {self.observed}" if self.status in OBSERVED else None


def cells_of(record: dict[str, Any]) -> dict[str, Cell]:
    """One cell per behaviour; of two results for one id (two checks) the worst."""
    out: dict[str, Cell] = {}
    for r in record.get("results", []):
        cell = Cell(Status(r["status"]), r.get("reason", ""), r.get("expected", ""), r.get("observed", ""))
        old = out.get(r["id"])
        if old is None or SEVERITY.index(cell.status) > SEVERITY.index(old.status):
            out[r["id"]] = cell
    return out


def load_record(column: Column) -> None:
    path = column.outdir / RESULTS
    try:
        column.record = json.loads(path.read_text())
    except FileNotFoundError:
        if column.problem is None:
            column.problem = f"conform wrote no results (exit {column.exit_code}){_tail(column.outdir / 'stderr')}"
        return
    except ValueError as exc:
        column.problem = f"unreadable {path.name}: {exc}"
        return
    column.cells = cells_of(column.record)


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    return f": {lines[-1].strip()}" if lines else ""


def move_unsupported(column: Column) -> str | None:
    """Why the kernel lacks the ioctl (the runner's probe), when it does and
    every move.* behaviour was skipped; None otherwise."""
    if column.record is None:
        return None
    probe = column.record.get("probes", {}).get("move")
    if probe is None or probe.get("ok", True):
        return None
    moves = [c for i, c in column.cells.items() if i.startswith("move.")]
    if moves and all(c.status == Status.SKIP for c in moves):
        return str(probe.get("detail") or "UFFDIO_MOVE not supported")
    return None


def verdict(column: Column) -> str:
    if column.record is None:
        return column.problem or "no results"
    counts = {s: sum(c.status == s for c in column.cells.values()) for s in Status}
    bad = [i for i, c in column.cells.items() if c.status in (Status.FAIL, Status.ERROR, Status.TIMEOUT)]
    tally = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n)
    unsupported = move_unsupported(column)
    if unsupported:
        n = sum(i.startswith("move.") for i in column.cells)
        head = f"{unsupported} ({n} move behaviours skipped)"
    elif not bad:
        head = "conforms"
    else:
        head = f"{len(bad)} not conforming: {', '.join(bad[:4])}" + (", ..." if len(bad) > 4 else "")
    if unsupported and bad:
        head += f"; {len(bad)} not conforming: {', '.join(bad[:4])}"
    if column.problem:
        head += f"; {column.problem}"
    return f"{head} [{tally}]"


def column_record(column: Column) -> dict[str, Any]:
    k = column.kernel
    record = column.record or {}
    return {
        "label": column.label,
        "release": k.release,
        "version": str(k.version),
        "source": k.source,
        "host": k.is_host,
        "accel": column.accel,
        "times": {"download": k.fetch, "prepare": k.prepare, "boot": column.boot, "checks": column.checks,
                  "wall": column.wall},
        "exit": column.exit_code,
        "problem": column.problem,
        "verdict": verdict(column),
        "move_unsupported": move_unsupported(column),
        "features": record.get("features"),
        "probes": record.get("probes"),
        "options": record.get("options"),
        "totals": record.get("totals"),
        "results": record.get("results", []),
        "dir": str(column.outdir),
    }


def column_from_record(d: dict[str, Any]) -> Column:
    """A column back from the matrix JSON (for the table and the checks of a saved run)."""
    k = Kernel(d["label"], d["source"], d["release"], None, d["times"].get("download") or 0.0,
               d["times"].get("prepare") or 0.0, host=d["host"])
    c = Column(k, Path(d.get("dir", ".")), d["accel"], d["times"].get("boot"), d["times"].get("checks"),
               d["times"].get("wall"), d.get("exit"), d.get("problem"))
    if d.get("results") or d.get("probes") is not None:
        c.record = {"results": d.get("results", []), "probes": d.get("probes") or {},
                    "features": d.get("features"), "totals": d.get("totals")}
        c.cells = cells_of(c.record)
    return c


# --- the spec's version notes against the columns -------------------------------------

@dataclass(frozen=True)
class Finding:
    kind: str          # predates | boundary | feature | unexplained
    behaviour: str | None
    kernels: tuple[str, ...]
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "behaviour": self.behaviour, "kernels": list(self.kernels), "text": self.text}


def _range_index(b: Behaviour, v: Version) -> int | None:
    for i, e in enumerate(b.expect):
        if e.kernels.covers(v):
            return i
    return None


def findings(spec: Spec, columns: Sequence[Column]) -> list[Finding]:
    out: list[Finding] = []
    ran = [c for c in columns if c.ran]
    feature = spec.feature
    for c in ran:
        features = (c.record or {}).get("features")
        if isinstance(features, int):
            has = bool(features & feature.value)
            says = not c.kernel.version < feature.since
            if has != says:
                out.append(Finding("feature", None, (c.label,),
                                   f"{feature.name} is {'reported' if has else 'absent'} on {c.kernel.release}, "
                                   f"the spec says it exists since {feature.since}"))
    for b in spec.behaviours:
        for c in ran:
            cell = c.cells.get(b.id)
            if cell is None:
                continue
            exp = b.expectation_for(c.kernel.version)
            if exp is None and cell.status in OBSERVED:
                held = ", ".join(str(e.kernels) for e in b.expect)
                out.append(Finding("predates", b.id, (c.label,),
                                   f"{cell.status.value} on {c.kernel.release}, which the spec says "
                                   f"predates it (holds {held})"))
            elif exp is not None and b.changes and cell.status == Status.FAIL:
                out.append(Finding("boundary", b.id, (c.label,),
                                   f"the spec's change at {', '.join(map(str, b.changes))} does not hold on "
                                   f"{c.kernel.release}: expected {cell.expected}, observed {cell.observed}"))
        # Kernels on the same side of every boundary must behave alike.
        sides: dict[int, list[Column]] = {}
        for c in ran:
            i = _range_index(b, c.kernel.version)
            if i is not None and b.id in c.cells and c.cells[b.id].outcome is not None:
                sides.setdefault(i, []).append(c)
        for i, group in sides.items():
            outcomes: dict[str, list[str]] = {}
            for c in group:
                outcomes.setdefault(c.cells[b.id].outcome or "", []).append(c.label)
            if len(outcomes) > 1:
                detail = "; ".join(f"{', '.join(labels)}: {o}" for o, labels in outcomes.items())
                out.append(Finding("unexplained", b.id, tuple(c.label for c in group),
                                   f"differs between kernels the spec treats alike ({b.expect[i].kernels}): "
                                   f"{detail}"))
    return out


def observed_changes(b: Behaviour, columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Where what the kernel did changes between neighbouring columns (by
    version; a verdict changing alone is no change of the kernel's), and
    whether the spec has a boundary there."""
    seen = sorted(((c.kernel.version, c) for c in columns
                   if c.ran and b.id in c.cells and c.cells[b.id].outcome is not None),
                  key=lambda vc: vc[0])
    out = []
    for (v1, c1), (v2, c2) in zip(seen, seen[1:], strict=False):
        if c1.cells[b.id].observed != c2.cells[b.id].observed:
            at = [str(v) for v in b.changes if v1 < v and not v2 < v]
            out.append({"after": c1.label, "before": c2.label, "spec": at,
                        "from": c1.cells[b.id].observed, "to": c2.cells[b.id].observed})
    return out


# --- the table ----------------------------------------------------------------------

def ordered(columns: Sequence[Column]) -> list[Column]:
    """By kernel version; at equal versions the host last."""
    return sorted(columns, key=lambda c: (c.kernel.version, c.kernel.is_host, c.kernel.release))


def table_ids(spec: Spec, columns: Sequence[Column]) -> list[str]:
    ids = [b.id for b in spec.behaviours]
    extra = [i for c in columns for i in c.cells if i not in ids]
    return ids + list(dict.fromkeys(extra))


def render_table(spec: Spec, columns: Sequence[Column]) -> str:
    ids = table_ids(spec, columns)
    labels = [c.label for c in columns]
    width = max(len(i) for i in ids)
    widths = [max(len(label), 5) for label in labels]
    lines = ["  ".join([f"{'behaviour':<{width}}", *(f"{label:>{w}}" for label, w in zip(labels, widths, strict=True))])]
    for i in ids:
        row = [f"{i:<{width}}"]
        for c, w in zip(columns, widths, strict=True):
            cell = c.cells.get(i)
            code = CODES[cell.status] if cell else ("-" if c.ran else NOT_RUN)
            row.append(f"{code:>{w}}")
        lines.append("  ".join(row).rstrip())
    lines.append("")
    for c in columns:
        t = c.kernel
        times = ", ".join(f"{name} {value:g} s" for name, value in (
            ("download", t.fetch), ("prepare", t.prepare), ("boot", c.boot), ("checks", c.checks),
            ("wall", c.wall)) if value)
        lines.append(f"{c.label}: {t.release} ({t.source}; {c.accel}{'; ' + times if times else ''})")
        lines.append(f"    {verdict(c)}")
    return "\n".join(lines) + "\n"


def render_findings(found: Sequence[Finding]) -> str:
    if not found:
        return "the spec's version notes agree with every column; no unexplained difference\n"
    return "".join(f"{f.kind}: {f.behaviour or '-'}: {f.text}\n" for f in found)


def matrix_record(spec: Spec, columns: Sequence[Column], found: Sequence[Finding], wall: float) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": {"path": str(spec.path), "name": spec.name, "date": spec.date},
        "wall": round(wall, 1),
        "kernels": [column_record(c) for c in columns],
        "behaviours": [{"id": b.id, "summary": b.summary,
                        "changes": [str(v) for v in b.changes],
                        "observed_changes": observed_changes(b, columns)} for b in spec.behaviours],
        "findings": [f.as_dict() for f in found],
    }


# --- running --------------------------------------------------------------------------

class Progress:
    """Lines on stderr, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = time.monotonic()

    def __call__(self, label: str, message: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.start:6.0f}s] {label}: {message}", file=sys.stderr, flush=True)


KTAP_RESULT = re.compile(rb"^\s+(?:not )?ok \d+ ")


def conform_argv(spec_path: Path, outdir: Path, options: Sequence[str]) -> list[str]:
    """The project's own `conform`, by absolute path, as the host and each guest run it."""
    script = Path(sys.executable).parent / "uffd-uabi"
    head = [str(script), "conform"] if script.exists() else [sys.executable, "-m", "conformance"]
    argv = [*head, "--spec", str(spec_path), "--json", str(outdir / RESULTS), "--ktap", str(outdir / KTAP)]
    return argv + (["--with", ",".join(options)] if options else [])


def run_host(column: Column, spec_path: Path, timeout: float, say: Callable[[str, str], None]) -> None:
    """The running kernel, checked directly; this also compiles the cffi
    bindings into build/cffi/, which the guests import read-only."""
    outdir = column.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / RESULTS).unlink(missing_ok=True)
    say(column.label, f"checking {column.kernel.release} directly")
    start = time.monotonic()
    with open(outdir / vm.STDOUT, "wb") as out, open(outdir / vm.STDERR, "wb") as err:
        try:
            proc = subprocess.run(conform_argv(spec_path, outdir, ()), stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=timeout, cwd=ROOT)
            column.exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            column.problem = f"killed after {timeout:g} s"
    column.checks = column.wall = round(time.monotonic() - start, 1)
    load_record(column)
    say(column.label, f"done in {column.wall:g} s: {verdict(column)}")


class Booter:
    """Boots kernels, as many at once as there are jobs; decides KVM or TCG once."""

    def __init__(self, args: argparse.Namespace, spec_path: Path, say: Callable[[str, str], None]) -> None:
        self.args = args
        self.spec_path = spec_path
        self.say = say
        # KVM is tried on the first boot only; the others wait for its outcome.
        self.kvm = "try" if args.kvm else "tcg"   # try -> trying -> kvm | tcg
        self.kvm_lock = threading.Lock()
        self.kvm_decided = threading.Event()
        if not args.kvm:
            self.kvm_decided.set()
        self.pool = ThreadPoolExecutor(max_workers=max(1, args.jobs), thread_name_prefix="matrix-vm")
        self.cancel = threading.Event()

    def submit(self, column: Column) -> Future[None]:
        return self.pool.submit(self.boot, column)

    def _trial(self) -> bool:
        """True when this boot is the one that tries KVM."""
        with self.kvm_lock:
            if self.kvm == "try":
                self.kvm = "trying"
                return True
        while not self.kvm_decided.wait(1.0):
            if self.cancel.is_set():
                break
        return False

    def boot(self, column: Column) -> None:
        if self.cancel.is_set():
            column.problem = "interrupted"
            return
        trial = self._trial()
        run = self._run(column, trial or self.kvm == "kvm")
        if trial:
            self.kvm = "kvm" if run.booted else "tcg"
            self.kvm_decided.set()
            if not run.booted and not self.cancel.is_set():
                self.say(column.label, f"KVM boot failed ({run.problem}); TCG from now on")
                run = self._run(column, False)
        column.accel = run.accel
        column.boot, column.checks, column.wall = run.boot, run.checks, run.wall
        column.exit_code, column.problem = run.exit_code, run.problem
        if run.release and run.release != column.kernel.release:
            column.problem = f"booted {run.release}, expected {column.kernel.release}"
        load_record(column)
        self.say(column.label, f"done in {run.wall:g} s (boot {run.boot} s, checks {run.checks} s): "
                               f"{verdict(column)}")

    def _run(self, column: Column, kvm: bool) -> vm.GuestRun:
        k = column.kernel
        assert k.image is not None
        accel = "kvm" if kvm else "tcg"
        self.say(column.label, f"booting {k.release} ({accel})")
        seen = [0, time.monotonic()]

        def progress(event: str, outdir: Path) -> None:
            if event == "booted":
                self.say(column.label, "booted; running the checks")
                return
            now = time.monotonic()
            if now - seen[1] < 30:
                return
            try:
                done = sum(1 for ln in (outdir / vm.STDOUT).read_bytes().splitlines() if KTAP_RESULT.match(ln))
            except FileNotFoundError:
                done = 0
            if done != seen[0]:
                self.say(column.label, f"{done} checks done")
            seen[:] = [done, now]

        return vm.run(k.image, conform_argv(self.spec_path, column.outdir, GUEST_OPTIONS), column.outdir,
                      timeout=self.args.timeout,
                      boot_timeout=min(KVM_BOOT_TIMEOUT, self.args.boot_timeout) if kvm else self.args.boot_timeout,
                      kvm=kvm, cpus=self.args.cpus, memory=self.args.memory, append=self.args.append,
                      swap_mb=self.args.swap, cwd=ROOT,
                      progress=progress, cancel=self.cancel)


def _outdir(base: Path, label: str) -> Path:
    return base / re.sub(r"[^A-Za-z0-9.+_-]", "_", label)


Wanted = tuple[str, debian.Package | Path | KernelError]


def kernels_wanted(args: argparse.Namespace, say: Callable[[str, str], None]) -> list[Wanted]:
    """(label, what) for the Debian images and user images, in the order they
    are fetched and booted; a line Debian lacks is an error in its place."""
    wanted: list[Wanted] = []
    if args.debian:
        lines = kernels.parse_lines(args.debian)
        say("debian", "reading the registry's kernel packages")
        images = kernels.registry_images(args.cache / "debian")
        if lines is None:
            lines = kernels.major_lines(images)
            say("debian", f"major lines: {', '.join(lines)}")
        for line in lines:
            try:
                wanted.append((line, kernels.choose(images, line)))
            except KernelError as exc:
                wanted.append((line, exc))
    return wanted + [(path.name, path) for path in args.kernel]


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    spec_path = Path(spec.path).resolve()
    out: Path = args.json.resolve()
    base = out.parent
    say = Progress()
    started = time.monotonic()
    if args.debian:
        try:
            kernels.parse_lines(args.debian)
        except KernelError as exc:
            print(f"uffd-uabi matrix: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.debian or args.kernel:
        try:
            vm.check_tools()
        except vm.VmUnavailable as exc:
            print(f"uffd-uabi matrix: cannot boot kernels here: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    try:
        wanted = kernels_wanted(args, say)
    except KernelError as exc:
        print(f"uffd-uabi matrix: {exc}", file=sys.stderr)
        return EXIT_FINDINGS

    host = Column(kernels.host_kernel(), _outdir(base, "host"))
    columns = [host]
    run_host(host, spec_path, args.timeout, say)

    booter = Booter(args, spec_path, say)
    futures: list[Future[None]] = []
    try:
        for label, want in wanted:
            try:
                if isinstance(want, KernelError):
                    raise want
                if isinstance(want, Path):
                    kernel = kernels.user_kernel(want)
                else:
                    say(label, "fetching")
                    kernel = kernels.debian_kernel(want, args.cache / "debian", args.cache / "kernels",
                                                   progress=lambda m: say("debian", m))
                    say(label, f"ready: {kernel.release} (download {kernel.fetch:g} s, "
                               f"prepare {kernel.prepare:g} s)")
            except KernelError as exc:
                say(label, f"skipped: {exc}")
                source = f"file {want}" if isinstance(want, Path) else "Debian"
                release = label if kernels.LINE.match(label) else "0.0"
                columns.append(Column(Kernel(label, source, release), _outdir(base, label), accel="none",
                                      problem=str(exc)))
                continue
            column = Column(kernel, _outdir(base, kernel.label))
            columns.append(column)
            futures.append(booter.submit(column))
        for f in futures:
            f.result()
    except KeyboardInterrupt:
        booter.cancel.set()
        say("matrix", "interrupted: stopping the VMs")
        booter.pool.shutdown(wait=True, cancel_futures=True)
        return 130
    finally:
        booter.pool.shutdown(wait=True)

    columns = ordered(columns)
    found = findings(spec, columns)
    write_atomic(out, json.dumps(matrix_record(spec, columns, found, time.monotonic() - started), indent=2) + "\n")
    sys.stdout.write(render_table(spec, columns))
    sys.stdout.write("\n" + render_findings(found))
    say("matrix", f"{len(columns)} kernels in {time.monotonic() - started:.0f} s; written to {out}")
    clean = all(c.ran and not c.problem and c.exit_code in (0, 4) for c in columns)
    return EXIT_OK if clean and not found else EXIT_FINDINGS
