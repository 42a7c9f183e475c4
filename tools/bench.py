"""Measure UFFDIO_MOVE against UFFDIO_COPY on the running kernel, to test
the three performance claims of the seed (the commit that added the ioctl):

1. faults: UFFDIO_COPY resolves missing faults about 20% faster than
   UFFDIO_MOVE when the pages have to be allocated anyway;
2. compaction: when pages can be recycled in user space (heap compaction),
   UFFDIO_MOVE saves the allocation, the copy and the MADV_DONTNEED, and the
   compacting thread finishes sooner (by over 40% on a Pixel 6);
3. swap: UFFDIO_MOVE moves swapped-out pages without reading them back,
   which mremap(2) can do too, but only by splitting the VMA.

Beside them, the cost per call against the pages per call (and one
transparent huge page per call), and the harness's own overhead beside a
bare C program running the same loop.

Every timed loop is C (tools/benchloops.py), timed inside itself; each
figure is the median of --repeats timed repeats after one untimed warm-up,
with its spread, the two ioctls alternating within each repeat.  Results go
to --json (with every sample) and to a plot, --svg; the HTML documentation
renders both (tools/sphinx_bench.py).  The swap benchmark needs swap: with
`--with swap` a swap file is made for the run when the machine has none,
and removed after.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from conformance.context import Context
from conformance.memory import (
    PM_PRESENT,
    PM_SWAP,
    Region,
    huge_state,
    mapping,
    pagemap,
    thp_size,
    unmapped,
    wait_until,
)
from conformance.system import swap_free
from conformance.uffd import Uffd
from spec import Spec, load
from tools import benchloops
from tools.output import write_atomic

DEFAULT_JSON = Path("build/bench/bench.json")
DEFAULT_SVG = Path("build/bench/bench.svg")
BENCHMARKS = ("faults", "compaction", "percall", "swap", "harness")
SCHEMA = 1
# The ioctl the seed compares UFFDIO_MOVE with; its number is the model's.
COPY_IOCTL = "UFFDIO_COPY"
METHODS = ("copy", "move")
SEED = 0x5EED
PAGEOUT_WAIT = 10.0
NOISY = 0.10  # a share of the CPUs used by others that makes the figures suspect


@dataclass(frozen=True)
class Sizes:
    fault_pages: int        # missing faults per repeat
    heap_pages: int         # pages of the heap to compact
    live_permille: int      # of its objects, the live ones
    percall_pages: int      # pages moved per pass of the per-call benchmark
    per_call: tuple[int, ...]
    thp_count: int          # huge pages moved per pass
    swap_pages: int         # swapped-out pages moved per pass
    cffi_calls: int         # empty calls timed per repeat of the harness benchmark


FULL = Sizes(fault_pages=16384, heap_pages=16384, live_permille=500, percall_pages=8192,
             per_call=tuple(1 << i for i in range(10)), thp_count=16, swap_pages=2048, cffi_calls=20000)
QUICK = Sizes(fault_pages=64, heap_pages=128, live_permille=500, percall_pages=512,
              per_call=(1, 8, 64, 512), thp_count=1, swap_pages=32, cffi_calls=1000)


class BenchError(Exception):
    """A benchmark could not run: said in one line, no traceback."""


class Unavailable(Exception):
    """This machine cannot run a benchmark (no swap, no THP): recorded."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default: {DEFAULT_JSON})")
    parser.add_argument("--svg", metavar="FILE", type=Path, default=DEFAULT_SVG,
                        help=f"where to write the plot (default: {DEFAULT_SVG})")
    parser.add_argument("--repeats", metavar="N", type=int,
                        help="timed repeats of every figure (default: 11, 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that everything runs, measures nothing worth quoting")
    parser.add_argument("--with", dest="grant", metavar="OPTS", action="append", default=[],
                        help="allow system changes: 'swap' makes a swap file for the run when there is no swap")
    parser.add_argument("--pin", action="store_true",
                        help="pin the two threads of the fault and compaction benchmarks to two CPUs "
                             "(default: where the scheduler puts them)")
    parser.add_argument("--only", metavar="NAME", action="append", choices=BENCHMARKS, default=[],
                        help=f"run only these benchmarks (repeatable; {', '.join(BENCHMARKS)})")


# --- statistics -------------------------------------------------------------------

def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median and spread (quartiles, range) of the repeats, and the repeats."""
    values = sorted(samples)
    if not values:
        raise BenchError("no samples")
    q1, _, q3 = (statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1
                 else (values[0],) * 3)
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "min": values[0], "max": values[-1],
            "n": len(values), "samples": list(samples)}


def ratios(top: Sequence[float], bottom: Sequence[float]) -> dict[str, Any]:
    """Repeat by repeat (the two were measured side by side): top / bottom."""
    return summary([t / b for t, b in zip(top, bottom, strict=True)])


def per_page(runs: Sequence[dict[str, Any]], key: str = "ns") -> list[float]:
    return [r[key] / r["pages"] for r in runs]


# --- the machine ---------------------------------------------------------------------

def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _setting(path: str) -> str | None:
    """The selected value of a sysfs choice such as "always [madvise] never"."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text


# A guest kernel that reports free pages to its host (virtio-balloon) hands
# freed memory back, so that allocating it again costs the host a fault:
# it makes every page allocation dearer, which UFFDIO_COPY does per page.
PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def reported_kib() -> int | None:
    try:
        return int((PAGE_REPORTING / "reported_kib").read_text())
    except (OSError, ValueError):
        return None


def machine(ctx: Context) -> dict[str, Any]:
    flags = _first_line("/proc/cpuinfo", "flags") or ""
    return {
        "release": ctx.release,
        "version": str(ctx.version),
        "cpus": os.cpu_count(),
        "cpu": _first_line("/proc/cpuinfo", "model name"),
        "virtual": "hypervisor" in flags.split(),
        "memory": _first_line("/proc/meminfo", "MemTotal"),
        "page_size": ctx.page_size,
        "thp_size": thp_size(),
        "thp": _setting("/sys/kernel/mm/transparent_hugepage/enabled"),
        "thp_defrag": _setting("/sys/kernel/mm/transparent_hugepage/defrag"),
        "page_reporting_order": _setting(str(PAGE_REPORTING / "page_reporting_order")),
    }


@dataclass(frozen=True)
class CpuTime:
    """Clock ticks of all CPUs (/proc/stat) and of this process and its
    children, to tell how much of the machine others used meanwhile."""

    total: int
    idle: int
    steal: int
    own: float

    @classmethod
    def now(cls) -> CpuTime:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user..steal; guest is inside user
        t = os.times()
        own = (t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")
        return cls(sum(ticks), ticks[3] + ticks[4], ticks[7], own)

    def since(self, start: CpuTime) -> dict[str, Any]:
        total = max(self.total - start.total, 1)
        busy = total - (self.idle - start.idle)
        return {"other_cpu": round(max(busy - (self.own - start.own), 0) / total, 3),
                "steal": round((self.steal - start.steal) / total, 3),
                "loadavg": [round(x, 2) for x in os.getloadavg()]}


def vmstat(name: str) -> int:
    with open("/proc/vmstat") as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return 0


def shootdowns() -> int:
    """TLB shootdowns received by all CPUs so far (/proc/interrupts): the
    interrupts one CPU sends another to flush a mapping it may cache."""
    try:
        with open("/proc/interrupts") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "TLB":
                    return sum(int(x) for x in rest.split() if x.isdigit())
    except OSError:
        pass
    return 0


def vmas(start: int, end: int) -> int:
    """The number of VMAs (lines of /proc/self/maps) that meet [start, end)."""
    count = 0
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            count += lo < end and hi > start
    return count


# --- the runner ----------------------------------------------------------------------

@dataclass
class Bench:
    """What every benchmark uses: the context, the loops, the sizes, and the
    harness's own view of each call (its wall time beside the C time)."""

    ctx: Context
    loops: ModuleType
    sizes: Sizes
    repeats: int
    names: dict[str, str]
    log: Callable[[str], None]
    overhead: list[float] = field(default_factory=list)  # Python's wall time minus C's, per timed call

    @property
    def lib(self) -> Any:
        return self.loops.lib

    @property
    def page_size(self) -> int:
        return self.ctx.page_size

    def method(self, name: str) -> int:
        return self.lib.BENCH_COPY if name == "copy" else self.lib.BENCH_MOVE

    def call(self, function: Callable[..., int], *args: Any) -> dict[str, Any]:
        """One C loop; its struct bench_run as a dict, with Python's own time
        around the call and the TLB shootdowns the machine received over
        it; an error raises."""
        ffi = self.loops.ffi
        run = ffi.new("struct bench_run *")
        tlb = shootdowns()
        start = time.perf_counter_ns()
        ret = function(*args, run)
        wall = time.perf_counter_ns() - start
        tlb = shootdowns() - tlb
        if ret or run.err:
            where = ffi.string(run.where).decode()
            raise BenchError(f"{where}: {os.strerror(-run.err)}" if run.err else where)
        out = {name: int(getattr(run, name)) for name in
               ("ns", "release_ns", "other_ns", "calls", "pages", "faults", "fresh", "bad")}
        out["wall_ns"] = wall
        out["shootdowns"] = tlb
        return out

    def order(self, repeat: int) -> tuple[str, ...]:
        """The two ioctls alternate which goes first, repeat by repeat."""
        return METHODS if repeat % 2 == 0 else METHODS[::-1]

    def repeated(self, one: Callable[[str], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """one(method) for both methods, an untimed warm-up and then
        `repeats` timed repeats."""
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for repeat in range(self.repeats + 1):
            for m in self.order(repeat):
                run = one(m)
                if repeat:
                    runs[m].append(run)
        return runs

    # memory

    def map(self, pages: int, label: str, *, huge: bool = False, align: int | None = None) -> Region:
        region = mapping(self.ctx, pages, label=label, align=align)
        lib = self.ctx.lib
        self.madvise(region, lib.MADV_HUGEPAGE if huge else lib.MADV_NOHUGEPAGE)
        return region

    def madvise(self, region: Region, advice: int, addr: int | None = None, length: int | None = None) -> None:
        ret = self.ctx.lib.uabi_madvise(region.addr if addr is None else addr,
                                        region.length if length is None else length, advice)
        if ret < 0:
            raise BenchError(f"madvise({advice}) of {region.label}: {os.strerror(-ret)}")

    @contextmanager
    def memory(self) -> Iterator[list[Region]]:
        """Regions appended to the list are unmapped when the block ends."""
        regions: list[Region] = []
        try:
            yield regions
        finally:
            for region in regions:
                self.ctx.lib.uabi_munmap(region.addr, region.length)

    @contextmanager
    def uffd(self) -> Iterator[Uffd]:
        try:
            uffd = Uffd.open(self.ctx, features=self.ctx.spec.feature.value)
        except OSError as exc:
            raise BenchError(f"no userfaultfd with {self.ctx.spec.feature.name} on {self.ctx.release}: "
                             f"{exc.strerror or exc}") from None
        with uffd:
            yield uffd

    def fill(self, region: Region) -> None:
        """Page i of the region gets contents of its own (the id i)."""
        self.lib.bench_fill(region.addr, region.pages, self.page_size, 0)

    def check(self, addr: int, pages: int, what: str, first: int = 0) -> None:
        """The pages hold what `fill` wrote (page i: the id first + i)."""
        bad = self.lib.bench_check(addr, pages, self.page_size, first)
        if bad:
            raise BenchError(f"{what}: {bad} of {pages} pages with the wrong contents")


# --- 1. fault resolution -----------------------------------------------------------------

def bench_faults(b: Bench) -> dict[str, Any]:
    """N missing faults, in address order, resolved one page each: COPY from
    a buffer the data is written into, MOVE of a page that writing the data
    has just allocated."""
    pages = b.sizes.fault_pages
    with b.uffd() as uffd, b.memory() as regions:
        dst, src, buf = (b.map(n, label) for n, label in ((pages, "dst"), (pages, "src"), (1, "buf")))
        regions += (dst, src, buf)
        uffd.register(dst)
        runs = b.repeated(lambda m: b.call(b.lib.bench_faults, uffd.fd, b.method(m), dst.addr, src.addr,
                                           buf.addr, pages, b.page_size))
    for m in METHODS:
        for run in runs[m]:
            if run["pages"] != pages or run["bad"]:
                raise BenchError(f"faults: {b.names[m]} resolved {run['pages']} of {pages} pages, "
                                 f"{run['bad']} with wrong contents")
    rate = {m: [run["pages"] * 1e9 / run["ns"] for run in runs[m]] for m in METHODS}
    return {
        "pages": pages,
        **{m: {"pages_per_second": summary(rate[m]), "ns_per_fault": summary(per_page(runs[m])),
               "faults": summary([r["faults"] for r in runs[m]]),
               "shootdowns": summary([r["shootdowns"] for r in runs[m]]),
               "runs": runs[m]} for m in METHODS},
        "ratio": ratios(rate["copy"], rate["move"]),  # > 1: COPY resolves faster
    }


# --- 2. compaction ----------------------------------------------------------------------------

def bench_compaction(b: Bench) -> dict[str, Any]:
    """The compacting thread's completion time, a mutator reading the new
    heap meanwhile: COPY + MADV_DONTNEED against MOVE of recycled pages.
    Then the same without the mutator ("alone"), which shows what a second
    running thread costs each ioctl (a MOVE must flush the TLB of every CPU
    that runs the process)."""
    s = b.sizes
    heap = s.heap_pages
    used = b.lib.bench_compacted_pages(heap, s.live_permille, SEED, b.page_size)
    if not used:
        raise BenchError("compaction: the heap has no live object")
    out: dict[str, Any] = {"heap_pages": heap, "live": s.live_permille / 1000, "compacted_pages": used,
                           "object_size": b.lib.BENCH_OBJ}
    with b.uffd() as uffd, b.memory() as regions:
        from_, to, spare = (b.map(heap, label) for label in ("from", "to", "spare"))
        buf = b.map(1, "buf")
        regions += (from_, to, spare, buf)
        uffd.register(to)
        for mutator, into in ((1, out), (0, out.setdefault("alone", {}))):
            runs = b.repeated(lambda m, mutator=mutator: b.call(
                b.lib.bench_compact, uffd.fd, b.method(m), from_.addr, to.addr, spare.addr, buf.addr, heap,
                s.live_permille, SEED, b.page_size, mutator))
            for m in METHODS:
                for run in runs[m]:
                    if run["pages"] != used or run["bad"]:
                        raise BenchError(f"compaction: {b.names[m]} filled {run['pages']} of {used} pages, "
                                         f"{run['bad']} with wrong contents")
            ns = {m: [r["ns"] for r in runs[m]] for m in METHODS}
            into.update({m: {"ns": summary(ns[m]), "release_ns": summary([r["release_ns"] for r in runs[m]]),
                             "faults": summary([r["faults"] for r in runs[m]]),
                             "shootdowns": summary([r["shootdowns"] for r in runs[m]]),
                             "fresh": summary([r["fresh"] for r in runs[m]]), "runs": runs[m]} for m in METHODS})
            if mutator:
                for m in METHODS:
                    into[m]["mutator_ns"] = summary([r["other_ns"] for r in runs[m]])
            into["reduction"] = summary([1 - mv / cp for mv, cp in zip(ns["move"], ns["copy"], strict=True)])
    return out


# --- 3. the cost per call ------------------------------------------------------------------

class PingPong:
    """Two registered regions, the pages in one of them: a MOVE takes them
    to the other; a COPY fills the other from them, which is then emptied."""

    def __init__(self, b: Bench, uffd: Uffd, a: Region, c: Region) -> None:
        self.b, self.uffd, self.full, self.empty = b, uffd, a, c

    def one(self, method: str, per_call: int, after: Callable[[Region], Any] | None = None) -> dict[str, Any]:
        b, src, dst = self.b, self.full, self.empty
        pages = src.pages
        run = b.call(b.lib.bench_percall, self.uffd.fd, b.method(method), dst.addr, src.addr, pages,
                     per_call, b.page_size)
        b.overhead.append(run["wall_ns"] - run["ns"])
        if after is not None:
            run["after"] = after(dst)
        b.check(dst.addr, pages, f"{b.names[method]}, {per_call} pages per call")
        if method == "move":
            self.full, self.empty = dst, src
        else:
            b.madvise(dst, b.ctx.lib.MADV_DONTNEED)
        return run


def bench_percall(b: Bench) -> dict[str, Any]:
    """ns per page and per call, 1 to 512 pages per call; then whole
    transparent huge pages, one per call."""
    pages = b.sizes.percall_pages
    points = []
    with b.uffd() as uffd, b.memory() as regions:
        a, c = b.map(pages, "a"), b.map(pages, "b")
        regions += (a, c)
        b.fill(a)
        uffd.register(a)
        uffd.register(c)
        pingpong = PingPong(b, uffd, a, c)
        for k in b.sizes.per_call:
            runs = b.repeated(lambda m, k=k: pingpong.one(m, k))
            points.append({"per_call": k, **{m: {"ns_per_page": summary(per_page(runs[m])),
                                                 "ns_per_call": summary([r["ns"] / r["calls"] for r in runs[m]])}
                                             for m in METHODS}})
    out: dict[str, Any] = {"pages": pages, "points": points, "knee": knees(points), "fit": fits(points)}
    try:
        out["thp"] = bench_thp(b)
    except Unavailable as exc:
        out["thp"] = {"unavailable": str(exc)}
    return out


def knees(points: Sequence[dict[str, Any]], within: float = 0.10) -> dict[str, int]:
    """Per ioctl, the fewest pages per call whose cost per page is within
    `within` of the cost at the most pages per call: where the per-call
    overhead stops mattering."""
    out = {}
    for m in METHODS:
        floor = points[-1][m]["ns_per_page"]["median"]
        out[m] = next(p["per_call"] for p in points if p[m]["ns_per_page"]["median"] <= floor * (1 + within))
    return out


def fits(points: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per ioctl, the median time of a call as a fixed cost plus a cost per
    page: least squares on the relative error, so that the calls of one page
    weigh as much as those of 512."""
    out = {}
    for m in METHODS:
        xyw = [(p["per_call"], y, 1 / (y * y)) for p in points for y in [p[m]["ns_per_call"]["median"]]]
        sw = sum(w for _, _, w in xyw)
        sx = sum(w * x for x, _, w in xyw)
        sy = sum(w * y for _, y, w in xyw)
        sxx = sum(w * x * x for x, _, w in xyw)
        sxy = sum(w * x * y for x, y, w in xyw)
        det = sw * sxx - sx * sx
        if det <= 0:
            continue
        out[m] = {"per_call_ns": (sxx * sy - sx * sxy) / det, "per_page_ns": (sw * sxy - sx * sy) / det}
    return out


def bench_thp(b: Bench) -> dict[str, Any]:
    """MOVE of whole, aligned transparent huge pages, one PMD per call;
    smaps says whether dst is mapped huge afterwards."""
    size = thp_size()
    if not size or size % b.page_size:
        raise Unavailable("the kernel reports no transparent huge page size")
    per = size // b.page_size
    pages = per * b.sizes.thp_count
    with b.uffd() as uffd, b.memory() as regions:
        a = b.map(pages, "a", huge=True, align=size)
        c = b.map(pages, "b", huge=True, align=size)
        regions += (a, c)
        b.fill(a)
        if huge_state(a) != "kept":
            raise Unavailable(f"the kernel did not map the source with huge pages ({huge_state(a)}; "
                              f"THP {_setting('/sys/kernel/mm/transparent_hugepage/enabled')})")
        uffd.register(a)
        uffd.register(c)
        pingpong = PingPong(b, uffd, a, c)
        runs = []
        for repeat in range(b.repeats + 1):
            run = pingpong.one("move", per, after=huge_state)
            if repeat:
                runs.append(run)
    return {"thp_size": size, "pages": pages, "per_call": per,
            "ns_per_call": summary([r["ns"] / r["calls"] for r in runs]),
            "ns_per_page": summary(per_page(runs)),
            "huge_after": sorted({r["after"] for r in runs})}


# --- 4. swapped-out pages -----------------------------------------------------------------

def _entries(addr: int, pages: int, page_size: int) -> dict[str, int]:
    counts = {"swapped": 0, "present": 0, "none": 0}
    for e in pagemap(addr, pages, page_size):
        counts["present" if e & PM_PRESENT else "swapped" if e & PM_SWAP else "none"] += 1
    return counts


def _page_out(b: Bench, region: Region, addr: int, pages: int) -> None:
    b.madvise(region, b.ctx.lib.MADV_PAGEOUT, addr, pages * b.page_size)
    if not wait_until(lambda: _entries(addr, pages, b.page_size)["swapped"] == pages, PAGEOUT_WAIT):
        raise Unavailable(f"MADV_PAGEOUT left {_entries(addr, pages, b.page_size)} of {pages} pages")


def bench_swap(b: Bench) -> dict[str, Any]:
    """Swapped-out pages in the middle of a VMA, moved back and forth: by
    MOVE, then by mremap(2).  pagemap must show them still swapped after
    every move, /proc/vmstat's pswpin must not grow, and the VMAs around the
    source are counted before and after."""
    pages = b.sizes.swap_pages
    need = 2 * pages * b.page_size
    if swap_free() < need:
        raise Unavailable(f"needs {need >> 20} MiB of free swap, the machine has {swap_free() >> 20} MiB "
                          "(--with swap makes a swap file for the run)")
    size = b.page_size
    out: dict[str, Any] = {"pages": pages}
    with b.uffd() as uffd, b.memory() as regions:
        for how in ("move", "mremap"):
            src = b.map(2 * pages, f"{how} src")
            regions.append(src)
            middle = src.addr + pages // 2 * size
            b.fill(src)
            if how == "move":
                uffd.register(src)
                dst = b.map(pages, "dst")
                regions.append(dst)
                uffd.register(dst)
                there = dst.addr
            else:
                there = unmapped(b.ctx, pages)
            _page_out(b, src, middle, pages)
            before = vmas(src.addr, src.end)
            pswpin = vmstat("pswpin")
            runs, kept, split = [], True, 0
            here = middle
            for repeat in range(2 * (b.repeats + 1)):
                if how == "move":
                    run = b.call(b.lib.bench_percall, uffd.fd, b.lib.BENCH_MOVE, there, here, pages, pages,
                                 size)
                else:
                    run = b.call(b.lib.bench_mremap, here, pages * size, there)
                    run["pages"] = pages
                if here == middle:
                    split = max(split, vmas(src.addr, src.end))
                moved, left = _entries(there, pages, size), _entries(here, pages, size)
                kept &= moved["swapped"] == pages and left["present"] == left["swapped"] == 0
                if repeat >= 2:
                    runs.append(run)
                here, there = there, here
            read_back = vmstat("pswpin") - pswpin
            if _entries(here, pages, size)["none"]:  # reading a hole of a registered range would block
                raise BenchError(f"{how} of swapped-out pages left holes: {_entries(here, pages, size)}")
            # reads them back (after pswpin was read): they are pages pages//2... of src as filled
            b.check(here, pages, f"{how} of swapped-out pages", first=pages // 2)
            out[how] = {"ns_per_page": summary(per_page(runs)), "ns": summary([r["ns"] for r in runs]),
                        "stayed_swapped": kept, "pswpin": read_back, "vmas_before": before,
                        "vmas_moved_out": split, "vmas_after": vmas(src.addr, src.end)}
    out["ratio"] = ratios(out["mremap"]["ns"]["samples"], out["move"]["ns"]["samples"])  # > 1: MOVE is faster
    return out


# --- 5. the harness itself -------------------------------------------------------------------

def bench_harness(b: Bench, percall: dict[str, Any] | None) -> dict[str, Any]:
    """What the harness adds: a call from Python into C, a clock reading,
    and the per-call loop through cffi beside the same loop in a program
    with no Python at all."""
    calls = b.sizes.cffi_calls
    nothing = b.lib.bench_nothing
    call_ns = []
    for _ in range(b.repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            nothing()
        call_ns.append((time.perf_counter_ns() - start) / calls)
    clock_ns = [b.lib.bench_clock(calls) / calls for _ in range(b.repeats)]
    out: dict[str, Any] = {"cffi_call_ns": summary(call_ns), "clock_ns": summary(clock_ns)}
    if b.overhead:
        out["wall_minus_c_ns"] = summary(b.overhead)
    program = benchloops.bare_program(b.ctx.spec)
    pages = b.sizes.percall_pages
    side = []
    for k in sorted({b.sizes.per_call[0], b.sizes.per_call[-1]}):
        row: dict[str, Any] = {"per_call": k}
        for m in METHODS:
            done = subprocess.run([str(program), m, str(pages), str(k), str(b.repeats)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BenchError(f"the bare program: {done.stderr.strip() or done.returncode}")
            row[m] = {"bare": summary([int(x) / pages for x in done.stdout.split()])}
            point = next((p for p in (percall or {}).get("points", []) if p["per_call"] == k), None)
            if point is not None:
                row[m]["cffi"] = point[m]["ns_per_page"]
        side.append(row)
    out["side_by_side"] = side
    out["program"] = str(program)
    return out


# --- the claims ---------------------------------------------------------------------------

def _span(s: dict[str, Any], fmt: str = "{:.2f}") -> str:
    return f"median {fmt.format(s['median'])}, {fmt.format(s['min'])} to {fmt.format(s['max'])}"


def grade(agrees: bool, fully: bool) -> str:
    """Confirmed when the figures meet the claim as stated; partly when they
    agree with it only in part (its direction, not its size); not otherwise."""
    if not agrees:
        return "not confirmed"
    return "confirmed" if fully else "partly confirmed"


def judge_faults(r: dict[str, Any], copy: str, move: str) -> tuple[str, str]:
    ratio = r["ratio"]
    gain = ratio["median"] - 1
    return grade(ratio["q1"] > 1, 0.10 <= gain <= 0.30), (
        f"{copy} resolved {ratio['median']:.2f} times the faults per second of {move} "
        f"({_span(ratio)} over {ratio['n']} repeats, quartiles {ratio['q1']:.2f} to {ratio['q3']:.2f}): "
        f"{abs(gain):.0%} {'faster' if gain >= 0 else 'slower'}; the claim holds when it is faster in three "
        "repeats of four or more (the lower quartile), by 10% to 30% at the median."
        + _shootdowns(r, copy, move, f"{r['pages']} faults"))


def _less(cut: float) -> str:
    return f"{cut:.0%} less" if cut >= 0 else f"{-cut:.0%} more"


def judge_compaction(r: dict[str, Any], copy: str, move: str) -> tuple[str, str]:
    cut = r["reduction"]
    finding = (
        f"With {move} the compacting thread took {_less(cut['median'])} time than with {copy} and "
        f"MADV_DONTNEED (time saved: {_span(cut, '{:.0%}')} over {cut['n']} repeats, quartiles {cut['q1']:.0%} to "
        f"{cut['q3']:.0%}); the claim holds when it takes less in three repeats of four or more (the lower "
        "quartile), and 40% less or more at the median.")
    alone = r.get("alone")
    if isinstance(alone, dict) and "reduction" in alone:
        finding += f" Without the mutator {move} took {_less(alone['reduction']['median'])} time."
    finding += _shootdowns(r, copy, move, f"{r['compacted_pages']} pages")
    return grade(cut["q1"] > 0, cut["median"] >= 0.40), finding


def _shootdowns(r: dict[str, Any], copy: str, move: str, per: str) -> str:
    if not all("shootdowns" in r.get(m, {}) for m in METHODS):
        return ""
    return (" TLB shootdowns per run: " + ", ".join(
        f"{name} {r[m]['shootdowns']['median']:.0f}" for m, name in (("copy", copy), ("move", move)))
        + f", for {per}.")


def judge_swap(r: dict[str, Any], copy: str, move: str) -> tuple[str, str]:
    mv, mr = r["move"], r["mremap"]
    moved_cleanly = mv["stayed_swapped"] and mv["pswpin"] == 0 and mv["vmas_moved_out"] == mv["vmas_before"]

    def stayed(x: dict[str, Any]) -> str:
        return "stayed" if x["stayed_swapped"] else "did not stay"

    return grade(moved_cleanly, mr["vmas_moved_out"] > mr["vmas_before"]), (
        f"{move} of {r['pages']} swapped-out pages: they {stayed(mv)} swapped out, {mv['pswpin']} pages were "
        f"read back, and the source stayed {mv['vmas_moved_out']} VMA(s); mremap(2) of the same: {stayed(mr)} "
        f"swapped out, {mr['pswpin']} read back, and the source became {mr['vmas_moved_out']} VMAs (from "
        f"{mr['vmas_before']}). Per page: {mv['ns_per_page']['median']:.0f} ns by {move}, "
        f"{mr['ns_per_page']['median']:.0f} ns by mremap.")


# claim id (= its benchmark), the figure the verdict needs, the judge
CLAIMS = (("faults", "ratio", judge_faults), ("compaction", "reduction", judge_compaction),
          ("swap", "move", judge_swap))


def verdicts(results: dict[str, Any], names: dict[str, str]) -> list[dict[str, str]]:
    """Each claim: confirmed, partly confirmed, not confirmed or not
    measured on this machine, with the figures that decide it."""
    out = []
    for claim, needs, judge in CLAIMS:
        result = results.get(claim)
        if not isinstance(result, dict) or needs not in result:
            out.append({"id": claim, "verdict": "not measured", "finding": _why(result)})
            continue
        verdict, finding = judge(result, names["copy"], names["move"])
        out.append({"id": claim, "verdict": verdict, "finding": finding})
    return out


def _why(result: Any) -> str:
    if isinstance(result, dict) and "unavailable" in result:
        return str(result["unavailable"])
    return "not run"


# --- the plot ---------------------------------------------------------------------------------

def plot(data: dict[str, Any]) -> bytes:
    """Four panels, one per benchmark, median bars or lines with the range
    of the repeats; the SVG is reproducible (no date, fixed ids)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "uffd-uabi", "svg.fonttype": "none", "font.size": 9})
    names = data["names"]
    colours = {"copy": "#4c72b0", "move": "#dd8452"}
    bench = data["benchmarks"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))

    def bars(ax: Any, items: Sequence[tuple[str, dict[str, Any], str]], scale: float, ylabel: str,
             title: str) -> None:
        """One bar per (label, figure, colour): the median, the range as an
        error bar, the median's value above it."""
        for i, (_, s, colour) in enumerate(items):
            ax.bar(i, s["median"] * scale, color=colour, width=0.6)
            ax.errorbar(i, s["median"] * scale, yerr=[[(s["median"] - s["min"]) * scale],
                                                      [(s["max"] - s["median"]) * scale]],
                        color="black", capsize=4)
            ax.annotate(f"{s['median'] * scale:.3g}", (i, s["max"] * scale), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xticks(range(len(items)), [label for label, _, _ in items], fontsize=7.5)
        ax.set_ylim(0, max(s["max"] for _, s, _ in items) * scale * 1.12)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)

    def missing(ax: Any, title: str, result: Any) -> None:
        ax.set_title(title, fontsize=10)
        ax.text(0.5, 0.5, f"not measured:\n{_why(result)}", ha="center", va="center", wrap=True, fontsize=8,
                transform=ax.transAxes)
        ax.set_axis_off()

    faults = bench.get("faults", {})
    if "ratio" in faults:
        bars(axes[0][0], [(names[m], faults[m]["pages_per_second"], colours[m]) for m in METHODS], 1e-3,
             "thousand faults per second", f"Missing faults resolved ({faults['pages']} pages)")
    else:
        missing(axes[0][0], "Missing faults resolved", faults)

    comp = bench.get("compaction", {})
    if "reduction" in comp:
        ax = axes[0][1]
        parts = [(comp, "with the mutator", 1.0), (comp.get("alone", {}), "alone", 0.55)]
        parts = [(part, how, shade) for part, how, shade in parts if "reduction" in part]
        items = [(f"{names[m]}\n{how}" + (f"\n{part[m]['shootdowns']['median']:.0f} shootdowns"
                                            if "shootdowns" in part[m] else ""), part[m], colours[m], shade)
                 for part, how, shade in parts for m in METHODS]
        bars(ax, [(label, part["ns"], colour) for label, part, colour, _ in items], 1e-6, "ms",
             f"Compacting thread's completion time ({comp['heap_pages']} pages, {comp['live']:.0%} live)")
        for i, (_, part, _, shade) in enumerate(items):
            ax.patches[i].set_alpha(shade)
            ax.bar(i, part["release_ns"]["median"] * 1e-6, color="none", edgecolor="black", hatch="//",
                   width=0.6, label="of which MADV_DONTNEED" if i == 0 else None)
        ax.legend(fontsize=8, loc="upper left")
    else:
        missing(axes[0][1], "Compacting thread's completion time", comp)

    percall = bench.get("percall", {})
    ax = axes[1][0]
    if "points" in percall:
        xs = [p["per_call"] for p in percall["points"]]
        for m in METHODS:
            st = [p[m]["ns_per_page"] for p in percall["points"]]
            ax.plot(xs, [s["median"] for s in st], marker="o", color=colours[m], label=names[m])
            ax.fill_between(xs, [s["min"] for s in st], [s["max"] for s in st], color=colours[m], alpha=0.2)
        thp = percall.get("thp", {})
        if "ns_per_page" in thp:
            ax.plot([thp["per_call"]], [thp["ns_per_page"]["median"]], marker="*", markersize=14, linestyle="none",
                    color="#55a868", label=f"{names['move']}, one huge page per call")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_yscale("log")
        ax.set_xlabel("pages per call")
        ax.set_ylabel("ns per page")
        ax.set_title(f"Cost per page against pages per call ({percall['pages']} pages a pass)", fontsize=10)
        ax.legend(fontsize=8)
    else:
        missing(ax, "Cost per page against pages per call", percall)

    swap = bench.get("swap", {})
    if "move" in swap:
        bars(axes[1][1], [(f"{label}\nVMAs {swap[how]['vmas_before']} \u2192 {swap[how]['vmas_moved_out']}, "
                           f"read back: {swap[how]['pswpin']}", swap[how]["ns_per_page"], colour)
                          for how, label, colour in (("move", names["move"], colours["move"]),
                                                     ("mremap", "mremap(2)", "#8172b3"))],
             1, "ns per page", f"Moving {swap['pages']} swapped-out pages")
    else:
        missing(axes[1][1], "Moving swapped-out pages", swap)

    m = data["machine"]
    fig.suptitle(f"{names['move']} against {names['copy']}: Linux {m['release']}, {m['cpus']} CPUs, {data['date']}"
                 + (" (--quick: sizes too small to quote)" if data["quick"] else ""), fontsize=11)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out.getvalue()


# --- the command ------------------------------------------------------------------------------

def names_of(spec: Spec) -> dict[str, str]:
    if COPY_IOCTL not in spec.values():
        raise BenchError(f"the spec does not define {COPY_IOCTL}, which the benchmark compares with")
    return {"copy": COPY_IOCTL, "move": spec.ioctl.name}


@contextmanager
def pinned(b: Bench, pin: bool) -> Iterator[list[int]]:
    """With `pin`, this thread on one CPU and the benchmarks' second threads
    on another, for the run; the CPUs used (none unpinned or with one CPU)."""
    saved = os.sched_getaffinity(0)
    cpus = sorted(saved)[:2]
    if not pin or len(cpus) < 2:
        yield []
        return
    os.sched_setaffinity(0, {cpus[0]})
    b.lib.bench_set_other_cpu(cpus[1])
    try:
        yield cpus
    finally:
        b.lib.bench_set_other_cpu(-1)
        os.sched_setaffinity(0, saved)


def measure(b: Bench, only: Sequence[str], pin: bool = False) -> tuple[dict[str, Any], list[int]]:
    """Every benchmark asked for, and the CPUs they were pinned to; one that
    cannot run here is recorded as unavailable with the reason, an error
    stops the run."""
    results: dict[str, Any] = {}
    with pinned(b, pin) as cpus:
        run_each(b, [n for n in BENCHMARKS if not only or n in only], results)
    return results, cpus


def run_each(b: Bench, chosen: Sequence[str], results: dict[str, Any]) -> None:
    for name in chosen:
        b.log(f"bench: {name}...")
        start = time.monotonic()
        try:
            if name == "harness":
                results[name] = bench_harness(b, results.get("percall"))
            else:
                results[name] = {"faults": bench_faults, "compaction": bench_compaction,
                                 "percall": bench_percall, "swap": bench_swap}[name](b)
        except Unavailable as exc:
            results[name] = {"unavailable": str(exc)}
        results[name]["seconds"] = round(time.monotonic() - start, 2)


def report(data: dict[str, Any]) -> str:
    """The figures in a few lines, for the terminal."""
    names, bench = data["names"], data["benchmarks"]
    lines = [f"Linux {data['machine']['release']}, {data['machine']['cpus']} CPUs, {data['repeats']} repeats"
             + (", --quick" if data["quick"] else "")]

    def fig(s: dict[str, Any], scale: float = 1, unit: str = "") -> str:
        return f"{s['median'] * scale:.4g}{unit} [{s['min'] * scale:.4g}..{s['max'] * scale:.4g}]"

    for name, result in bench.items():
        if "unavailable" in result:
            lines.append(f"{name}: not measured: {result['unavailable']}")
        elif name == "faults":
            lines.append("faults: " + ", ".join(f"{names[m]} {fig(result[m]['pages_per_second'], 1e-3, 'k/s')}"
                                                for m in METHODS) + f"; ratio {fig(result['ratio'])}; TLB shootdowns "
                         + ", ".join(f"{names[m]} {result[m]['shootdowns']['median']:.0f}" for m in METHODS))
        elif name == "compaction":
            for label, r in (("compaction", result), ("compaction alone", result["alone"])):
                lines.append(f"{label}: " + ", ".join(f"{names[m]} {fig(r[m]['ns'], 1e-6, ' ms')}" for m in METHODS)
                             + f"; reduction {fig(r['reduction'], 100, '%')}; TLB shootdowns "
                             + ", ".join(f"{names[m]} {r[m]['shootdowns']['median']:.0f}" for m in METHODS))
        elif name == "percall":
            for p in result["points"]:
                lines.append(f"percall {p['per_call']:>4}: " + ", ".join(
                    f"{names[m]} {fig(p[m]['ns_per_page'], 1, ' ns/page')}" for m in METHODS))
            for m, f in result["fit"].items():
                lines.append(f"percall fit {names[m]}: {f['per_call_ns']:.0f} ns per call + {f['per_page_ns']:.0f} ns per page")
            thp = result.get("thp", {})
            lines.append(f"percall THP: {fig(thp['ns_per_call'], 1e-3, ' us/call')}, huge after: {thp['huge_after']}"
                         if "ns_per_call" in thp else f"percall THP: not measured: {thp.get('unavailable')}")
        elif name == "swap":
            for how in ("move", "mremap"):
                r = result[how]
                lines.append(f"swap {how}: {fig(r['ns_per_page'], 1, ' ns/page')}, stayed swapped {r['stayed_swapped']}, "
                             f"pswpin {r['pswpin']}, VMAs {r['vmas_before']} -> {r['vmas_moved_out']}")
        elif name == "harness":
            lines.append(f"harness: cffi call {fig(result['cffi_call_ns'], 1, ' ns')}, clock reading "
                         f"{fig(result['clock_ns'], 1, ' ns')}")
            for row in result["side_by_side"]:
                for m in METHODS:
                    cffi = fig(row[m]["cffi"], 1, " ns/page") if "cffi" in row[m] else "-"
                    lines.append(f"harness {names[m]} {row['per_call']}/call: bare C {fig(row[m]['bare'], 1, ' ns/page')}"
                                 f", through cffi {cffi}")
    for c in data["claims"]:
        lines.append(f"claim {c['id']}: {c['verdict']}: {c['finding']}")
    load = data["load"]
    if load["other_cpu"] > NOISY:
        lines.append(f"warning: other processes used {load['other_cpu']:.0%} of the CPUs during the run "
                     f"(steal {load['steal']:.0%}, load average {load['loadavg_before'][0]} before): "
                     "the figures are noisy")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    sizes = QUICK if args.quick else FULL
    repeats = (3 if args.quick else 11) if args.repeats is None else args.repeats
    if repeats < 1:
        print("bench: --repeats must be at least 1", file=sys.stderr)
        return 2

    from conformance.cli import options_of
    from conformance.context import make_context
    from conformance.system import prepared

    options = options_of(args.grant)
    ctx = make_context(spec, options)
    started, cpu, reported = time.monotonic(), CpuTime.now(), reported_kib()
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        names = names_of(spec)
        b = Bench(ctx, benchloops.load(spec), sizes, repeats, names,
                  log=lambda text: print(text, file=sys.stderr, flush=True))
        with prepared(ctx):
            results, cpus = measure(b, args.only, args.pin)
    except (BenchError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    data = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(ctx),
        "spec": {"path": spec.path, "date": spec.date},
        "names": names,
        "quick": args.quick,
        "repeats": repeats,
        "options": sorted(options),
        "pinned": cpus,  # this thread on the first, the second threads on the other
        "benchmarks": results,
        "claims": verdicts(results, names),
        "wall": round(time.monotonic() - started, 2),
        "load": {"loadavg_before": load_before, **CpuTime.now().since(cpu),
                 "reported_kib": None if reported is None else (reported_kib() or 0) - reported},
        "svg": os.path.relpath(args.svg.resolve(), args.json.resolve().parent),
    }
    write_atomic(args.json, json.dumps(data, indent=1) + "\n")
    write_atomic(args.svg, plot(data))
    sys.stdout.write(report(data))
    print(f"{args.json}, {args.svg}: {data['wall']} s")
    return 0
