"""A fuzzer case as a short standalone C program, for a kernel developer
who has neither this project nor a <linux/userfaultfd.h> with UFFDIO_MOVE.

The program declares the structs and request codes itself, from the model,
builds the same layout at the same offsets from a huge-page-aligned base,
makes the call and prints the result and every page in the fuzzer's
words ("A0 hole", "B1 A1" for a page holding what A1 held), so its output
can be set beside the oracle's prediction, which heads the file.
"""

from __future__ import annotations

from collections.abc import Iterable

from spec.model import Spec

from .bindings import struct_body
from .layout import (
    ARG_MOVE_UNWRITABLE,
    ARG_UNREADABLE,
    BEFORE_FORK,
    FILE,
    GUARD,
    MARKERS,
    OTHER,
    OTHER_PROCESS,
    POISON,
    PRESENT,
    SHARED,
    SWAPPED,
    THIS,
    THP,
    WP_MARKER,
    ZERO,
    Arena,
    Call,
    Geometry,
    Layout,
)
from .observation import MOVE_SENTINEL
from .oracle import Prediction, initial_content
from .realize import MLOCK_ONFAULT, TAG_SIZE, Observed

NONCE = "00000000"
# What the program needs beyond the uABI: facts of <sys/mman.h> that an
# older C library may lack, with the kernel's values.
FALLBACKS = {"MADV_PAGEOUT": 21, "MADV_GUARD_INSTALL": 102, "MLOCK_ONFAULT": MLOCK_ONFAULT}

_PRELUDE = r"""#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/types.h>
"""

_HELPERS = r"""
static char *base;
static int pagemap_fd;

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static char *page(long n)
{
	return base + n * PAGE;
}

/* ~LABEL~NONCE, padded with ~: what the fuzzer writes into each page */
static inline void tag(long n, const char *label)
{
	char t[TAG + 1];
	int len;
	memset(t, '~', sizeof(t));
	len = snprintf(t, sizeof(t), "~%s~" NONCE, label);
	if (len < TAG)
		t[len] = '~';
	memcpy(page(n), t, TAG);
}

static uint64_t entry(long n)
{
	uint64_t e;
	if (pread(pagemap_fd, &e, 8, (uintptr_t)page(n) / PAGE * 8) != 8)
		die("pagemap");
	return e;
}

static uint64_t key(uint64_t e)
{
	return e & ((1ULL << 62) | (1ULL << 58) | (1ULL << 57) | ((1ULL << 55) - 1));
}

/* the fuzzer's word for what page n holds */
static void show(long n, const char *label, int count, const uint64_t *keys, const char **names)
{
	uint64_t e = entry(n);
	char t[TAG + 1] = {0}, zero[TAG] = {0};
	if (e & (1ULL << 63)) {
		memcpy(t, page(n), TAG);
		if (!memcmp(t, zero, TAG)) {
			printf("%s zero\n", label);
			return;
		}
		char *end = strstr(t + 1, "~" NONCE);
		if (t[0] == '~' && end) {
			*end = 0;
			printf("%s %s\n", label, t + 1);
			return;
		}
		printf("%s data\n", label);
	} else if (e & ((1ULL << 62) | (1ULL << 58))) {
		for (int i = 0; i < count; i++)
			if (keys[i] == key(e)) {
				printf("%s %s\n", label, names[i]);
				return;
			}
		printf("%s entry:%#llx\n", label, (unsigned long long)e);
	} else {
		printf("%s hole\n", label);
	}
}
"""

_ZAP = r"""
static void *zap(void *addr)
{
	madvise(addr, PAGE, MADV_DONTNEED);
	return NULL;
}
"""


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(lines: Iterable[str]) -> list[str]:
    return ["/*"] + [f" * {line}".rstrip().replace("*/", "* /") for line in lines] + [" */"]


def _errnames(spec: Spec) -> list[str]:
    names = sorted({e.errno for e in spec.errors})
    cases = "".join(f"#ifdef {n}\n\tcase {n}: return \"{n}\";\n#endif\n" for n in names)
    return ["static const char *errname(int e)", "{", "\tswitch (e) {", cases.rstrip("\n"),
            "\tdefault: return \"?\";", "\t}", "}"]


def program(spec: Spec, geo: Geometry, arena: Arena, layout: Layout, call: Call,
            prediction: Prediction | None = None, observed: Observed | None = None,
            release: str = "", headline: str = "") -> str:
    """The C source that reproduces `call` on `layout`."""
    ps = geo.page_size
    v = spec.values()
    move_offset = spec.struct.field("move").offset
    starts = layout.starts(geo)
    before, after = (arena.base - arena.start) // ps, (arena.end - arena.base) // ps
    mode_names = {f.value: f.name for fs in spec.flags for f in fs.values}

    head = [headline or "A UFFDIO_MOVE case from uffd-uabi fuzz.", ""]
    head += ["Layout (pages from a huge-page-aligned base):", *("  " + x for x in layout.describe(geo))]
    head += ["Call: " + call.describe(layout, geo, mode_names), ""]
    if prediction is not None:
        head += [f"The spec ({spec.path}, {spec.date}) predicts: {_result(prediction.errno, prediction.move)}"
                 + ("" if prediction.move_stated else " (move not stated)"),
                 f"  by {prediction.decision.describe()}",
                 "  pages: " + " ".join(f"{lab}={p}" for lab, p in zip(layout.labels(), prediction.pages,
                                                                        strict=True) if p != "hole")]
    if observed is not None:
        head += [f"Linux {release} answered: {_result(observed.errno, observed.move)}",
                 "  pages: " + " ".join(f"{lab}={p}" for lab, p in zip(layout.labels(), observed.pages,
                                                                        strict=True) if p != "hole")]
    head += ["", "Build and run (as root): gcc -O2 -o repro repro.c -lpthread && ./repro"]

    out = _comment(head) + [_PRELUDE.rstrip("\n"), "", "/* the uABI, from the spec (not <linux/userfaultfd.h>) */"]
    structs = ["uffdio_api", "uffdio_range", "uffdio_register", "uffdio_writeprotect", "uffdio_poison",
               "uffd_msg", spec.struct.name]
    for s in spec.structs:
        if s.name in structs:
            out.append(struct_body(s).rstrip("\n"))
    for name in ("UFFD_API", "UFFDIO_API", "UFFDIO_REGISTER", "UFFDIO_WRITEPROTECT", "UFFDIO_POISON",
                 spec.ioctl.name, "UFFDIO_REGISTER_MODE_MISSING", "UFFDIO_REGISTER_MODE_WP",
                 "UFFDIO_WRITEPROTECT_MODE_WP", "UFFD_FEATURE_WP_UNPOPULATED", "UFFD_FEATURE_POISON",
                 "UFFD_FEATURE_EVENT_REMOVE", "UFFD_USER_MODE_ONLY"):
        out.append(f"#define {name} 0x{v[name]:X}ULL")
    out.append("")
    out += [f"#ifndef {n}\n#define {n} {val}\n#endif" for n, val in FALLBACKS.items()]
    out += [f"#define PAGE {ps}L", f"#define HUGE {geo.pmd_size}L", f"#define TAG {TAG_SIZE}",
            f"#define NONCE {_c_string(NONCE)}", f"#define SENTINEL 0x{MOVE_SENTINEL:X}LL"]
    out += [_HELPERS.rstrip("\n"), *([_ZAP.rstrip("\n")] if layout.pending_event else []), "", *_errnames(spec), ""]
    out += ["int main(void)", "{"]
    out += [f"\t{line}" if line else "" for line in _body(spec, geo, layout, call, starts, before, after,
                                                           move_offset)]
    out += ["}", ""]
    return "\n".join(out)


def _result(errno: str | None, move: int | None) -> str:
    return f"errno={errno or 0} move={'untouched' if move is None else move}"


def _body(spec: Spec, geo: Geometry, layout: Layout, call: Call, starts: tuple[int, ...],
          before: int, after: int, move_offset: int) -> list[str]:
    lines = [
        "if (sysconf(_SC_PAGESIZE) != PAGE)",
        "\treturn fprintf(stderr, \"built for %ld-byte pages\\n\", PAGE), 3;",
        "pagemap_fd = open(\"/proc/self/pagemap\", O_RDONLY);",
        "if (pagemap_fd < 0)",
        "\tdie(\"/proc/self/pagemap\");",
        "",
        f"/* the arena: {before} pages reserved before the base, {after} after it */",
        f"long before = {before}, after = {after};",
        "char *r = mmap(NULL, (before + after) * PAGE + HUGE, PROT_NONE,",
        "\t       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);",
        "if (r == MAP_FAILED)",
        "\tdie(\"mmap arena\");",
        "base = (char *)(((uintptr_t)r + before * PAGE + HUGE - 1) & ~(uintptr_t)(HUGE - 1));",
        "if (base - before * PAGE > r)",
        "\tmunmap(r, base - before * PAGE - r);",
        "munmap(base + after * PAGE, r + (before + after) * PAGE + HUGE - (base + after * PAGE));",
        "",
    ]
    for i, (vma, start) in enumerate(zip(layout.vmas, starts, strict=True)):
        n = len(vma.pages)
        name = layout.label(i)
        lines.append(f"/* {name}: pages {start}..{start + n - 1} */")
        rw = "PROT_READ | PROT_WRITE"
        if vma.kind == FILE:
            lines += [f"int fd{name} = memfd_create(\"{name}\", MFD_CLOEXEC);",
                      f"if (fd{name} < 0 || ftruncate(fd{name}, {n} * PAGE))", f"\tdie(\"memfd {name}\");",
                      f"if (mmap(page({start}), {n} * PAGE, {rw}, MAP_PRIVATE | MAP_FIXED, fd{name}, 0) == MAP_FAILED)",
                      f"\tdie(\"mmap {name}\");", f"close(fd{name});"]
        else:
            share = "MAP_SHARED" if vma.kind == SHARED else "MAP_PRIVATE"
            lines += [f"if (mmap(page({start}), {n} * PAGE, {rw}, {share} | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)",
                      f"\tdie(\"mmap {name}\");"]
        if vma.huge:
            lines += [f"if (madvise(page({start}), {n} * PAGE, MADV_HUGEPAGE))", "\tdie(\"MADV_HUGEPAGE\");"]
        if vma.gap and vma.unmapped:
            lines += [f"munmap(page({start - vma.gap}), {vma.gap} * PAGE);"]
    lines.append("")

    def pages_in(states: tuple[str, ...]) -> list[tuple[int, str, str, int]]:
        return [(starts[i] + k, f"{layout.label(i)}{k}", s, i) for i, vma in enumerate(layout.vmas)
                for k, s in enumerate(vma.pages) if s in states]

    def populate(states: tuple[str, ...]) -> list[str]:
        out = []
        for at, label, state, _i in pages_in(states):
            out.append(f"(void)*(volatile char *)page({at});" if state == ZERO else f"tag({at}, \"{label}\");")
        return out

    early = populate(BEFORE_FORK)
    if early:
        lines += ["/* pages shared with a child that lives until the end */", *early,
                  "int sleeper[2];", "if (pipe(sleeper))", "\tdie(\"pipe\");", "pid_t child = fork();",
                  "if (child == 0) {", "\tclose(sleeper[1]);", "\tread(sleeper[0], sleeper, 1);", "\t_exit(0);", "}",
                  "close(sleeper[0]);", ""]
    lines += populate((PRESENT, ZERO, SWAPPED, THP))
    for at, _label, state, _i in pages_in((SWAPPED, GUARD)):
        advice = "MADV_PAGEOUT" if state == SWAPPED else "MADV_GUARD_INSTALL"
        lines += [f"if (madvise(page({at}), PAGE, {advice}))", f"\tdie(\"{advice}\");"]
    for vma, start in zip(layout.vmas, starts, strict=True):
        n = len(vma.pages)
        if vma.prot != "rw":
            prot = " | ".join(p for c, p in (("r", "PROT_READ"), ("w", "PROT_WRITE"), ("x", "PROT_EXEC"))
                              if c in vma.prot)
            lines += [f"if (mprotect(page({start}), {n} * PAGE, {prot}))", "\tdie(\"mprotect\");"]
        if vma.mlocked:
            lines += [f"if (mlock2(page({start}), {n} * PAGE, MLOCK_ONFAULT))", "\tdie(\"mlock2\");"]
    lines.append("")

    feats = ["UFFD_FEATURE_WP_UNPOPULATED"] if any(WP_MARKER in v.pages for v in layout.vmas) else []
    if any(POISON in v.pages for v in layout.vmas):
        feats.append("UFFD_FEATURE_POISON")
    owners = {THIS} | {v.uffd for v in layout.vmas if v.uffd == OTHER}
    for owner in sorted(owners, reverse=True):
        var = "uffd" if owner == THIS else "other"
        wanted = feats + (["UFFD_FEATURE_EVENT_REMOVE"] if owner == THIS and layout.pending_event else [])
        lines += [f"int {var} = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);",
                  f"if ({var} < 0)", f"\t{var} = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);",
                  f"if ({var} < 0)", "\tdie(\"userfaultfd\");"]
        if owner != THIS or layout.api:
            lines += [f"struct uffdio_api api_{var} = {{ .api = UFFD_API, .features = {' | '.join(wanted) or 0} }};",
                      f"if (ioctl({var}, UFFDIO_API, &api_{var}))", "\tdie(\"UFFDIO_API\");"]
    for i, (vma, start) in enumerate(zip(layout.vmas, starts, strict=True)):
        if not vma.registered:
            continue
        var = "uffd" if vma.uffd == THIS else "other"
        mode = "UFFDIO_REGISTER_MODE_MISSING" + (" | UFFDIO_REGISTER_MODE_WP" if vma.wp else "")
        lines += [f"struct uffdio_register reg{i} = {{ .range = {{ (uintptr_t)page({start}), {len(vma.pages)} * PAGE }}, "
                  f".mode = {mode} }};",
                  f"if (ioctl({var}, UFFDIO_REGISTER, &reg{i}))", f"\tdie(\"UFFDIO_REGISTER {layout.label(i)}\");"]
    for at, label, state, i in pages_in((WP_MARKER, POISON)):
        var = "uffd" if layout.vmas[i].uffd == THIS else "other"
        if state == WP_MARKER:
            lines += [f"struct uffdio_writeprotect wp_{label} = {{ {{ (uintptr_t)page({at}), PAGE }}, UFFDIO_WRITEPROTECT_MODE_WP }};",
                      f"if (ioctl({var}, UFFDIO_WRITEPROTECT, &wp_{label}))", "\tdie(\"UFFDIO_WRITEPROTECT\");"]
        else:
            lines += [f"struct uffdio_poison poison_{label} = {{ {{ (uintptr_t)page({at}), PAGE }}, 0 }};",
                      f"if (ioctl({var}, UFFDIO_POISON, &poison_{label}))", "\tdie(\"UFFDIO_POISON\");"]
    lines.append("")

    marked = pages_in((SWAPPED, *MARKERS))
    if marked:
        lines.append("/* swap and marker entries, named by the page they stood for */")
        lines.append(f"uint64_t keys[{len(marked)}];")
        lines.append("const char *names[] = {" + ", ".join(_c_string(initial_content(label, state))
                                                        for _at, label, state, _i in marked) + "};")
        lines += [f"keys[{j}] = key(entry({at}));" for j, (at, *_rest) in enumerate(marked)]
    else:
        lines += ["uint64_t *keys = NULL;", "const char **names = NULL;"]
    lines.append("")
    lines += _call(spec, geo, layout, call, starts, move_offset)
    lines += ["printf(\"result: errno=%s move=\", e ? errname(e) : \"0\");",
              "if (move == SENTINEL)", "\tprintf(\"untouched\\n\");", "else", "\tprintf(\"%lld\\n\", move);"]
    for i, (vma, start) in enumerate(zip(layout.vmas, starts, strict=True)):
        lines += [f"for (long k = 0; k < {len(vma.pages)}; k++) {{", "\tchar label[16];",
                  f"\tsnprintf(label, sizeof(label), \"{layout.label(i)}%ld\", k);",
                  f"\tshow({start} + k, label, {len(marked)}, keys, names);", "}"]
    if early:
        lines += ["close(sleeper[1]);", "waitpid(child, NULL, 0);"]
    lines.append("return 0;")
    return lines


def _call(spec: Spec, geo: Geometry, layout: Layout, call: Call, starts: tuple[int, ...],
          move_offset: int) -> list[str]:
    def address(a: object) -> str:
        from .layout import Addr
        assert isinstance(a, Addr)
        if a.special is not None:
            return f"0x{(geo.special(a.special) + a.offset) % (1 << 64):X}ULL"
        expr = f"(uintptr_t)page({starts[a.vma] + a.page})"
        return expr + (f" + ({a.offset})" if a.offset else "")

    length = call.length(geo) % (1 << 64)
    lines = [f"/* the call: {call.describe(layout, geo, {f.value: f.name for fs in spec.flags for f in fs.values})} */"]
    if call.arg == ARG_UNREADABLE:
        lines += ["char *ap = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);",
                  "struct uffdio_move *mv = (void *)ap;"]
    elif call.arg == ARG_MOVE_UNWRITABLE:
        lines += ["char *ap = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);",
                  f"struct uffdio_move *mv = (void *)(ap + PAGE - {move_offset});"]
    else:
        lines += ["struct uffdio_move arg, *mv = &arg;"]
    lines += [f"mv->dst = {address(call.dst)};", f"mv->src = {address(call.src)};",
              f"mv->len = 0x{length:X}ULL;", f"mv->mode = 0x{call.mode:X}ULL;", "mv->move = SENTINEL;"]
    if call.arg == ARG_MOVE_UNWRITABLE:
        lines += ["mprotect(ap + PAGE, PAGE, PROT_READ);"]
    if layout.pending_event:
        z = layout.zapped()
        assert z is not None
        lines += ["/* MADV_DONTNEED on a registered page, from a thread: UFFD_EVENT_REMOVE stays unread */",
                  "pthread_t zapper;", f"pthread_create(&zapper, NULL, zap, page({starts[z[0]] + z[1]}));",
                  "struct pollfd pending = { uffd, POLLIN, 0 };", "poll(&pending, 1, 2000);"]
    protect = call.arg == ARG_UNREADABLE
    if call.caller == OTHER_PROCESS:
        lines += ["/* made by a child, with the userfaultfd it inherited */",
                  "int out[2];", "if (pipe(out))", "\tdie(\"pipe\");", "pid_t caller = fork();", "if (caller == 0) {"]
        lines += ["\tmprotect(ap, PAGE, PROT_NONE);"] if protect else []
        lines += ["\tlong long res[2];", "\tres[0] = ioctl(uffd, UFFDIO_MOVE, mv) ? errno : 0;"]
        lines += ["\tmprotect(ap, PAGE, PROT_READ);"] if protect else []
        lines += ["\tres[1] = mv->move;", "\twrite(out[1], res, sizeof(res));", "\t_exit(0);", "}",
                  "long long res[2] = {0, SENTINEL};", "read(out[0], res, sizeof(res));", "waitpid(caller, NULL, 0);",
                  "int e = (int)res[0];", "long long move = res[1];"]
    else:
        lines += ["mprotect(ap, PAGE, PROT_NONE);"] if protect else []
        lines += ["int e = ioctl(uffd, UFFDIO_MOVE, mv) ? errno : 0;"]
        lines += ["mprotect(ap, PAGE, PROT_READ);"] if protect else []
        lines += ["long long move = mv->move;"]
    if layout.pending_event:
        lines += ["struct uffd_msg msg;", "read(uffd, &msg, sizeof(msg));", "pthread_join(zapper, NULL);"]
    return lines


def parse_output(text: str) -> tuple[str | None, int | None, dict[str, str]]:
    """The errno, `move` and pages the program printed."""
    errno: str | None = None
    move: int | None = None
    pages: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("result: "):
            fields = dict(part.split("=", 1) for part in line[len("result: "):].split())
            errno = None if fields["errno"] == "0" else fields["errno"]
            move = None if fields["move"] == "untouched" else int(fields["move"])
        elif line.strip():
            label, state = line.split(" ", 1)
            pages[label] = state
    return errno, move, pages
