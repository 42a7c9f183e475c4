"""cffi bindings generated from the model, compiled once and cached.

The installed <linux/userfaultfd.h> may predate UFFDIO_MOVE, and a header
is the thing under review anyway: every userfaultfd struct and number here
comes from the spec.  The C compiler then checks the model against the C
language: `_Static_assert`s pin every struct size and field offset the
model computed, and every request code against the kernel's own _IOC
macros, so a wrong layout fails the build instead of corrupting memory.

The compiled module lives in <repo>/build/cffi/<hash of the source>/, so a
guest VM of the kernel matrix that mounts the tree read-only imports what
the host compiled, and a changed spec gets a fresh build.

A tool with C of its own (the benchmark's timed loops) passes it as
`extra`: it is compiled after the model's declarations into a module of its
own, cached the same way, and the plain module is left as it is.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import cffi

from spec import Spec
from spec.ctypes import SCALARS

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "cffi"

# More to compile beside the model: (a name for the module, cdef, C source).
Extra = tuple[str, str, str] | None

# Guard of the installed uapi header: defined first, so that even an
# indirect include of it contributes nothing and cannot clash with the
# model's values.  tests/test_bindings.py checks it is never read at all.
SYSTEM_HEADER = "linux/userfaultfd.h"
_GUARD = "_LINUX_USERFAULTFD_H"

# System facts the checks need that are not part of the uABI under test;
# they come from the C library's headers, never typed here.
SYSTEM_CONSTANTS = (
    "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC",
    "MAP_PRIVATE", "MAP_SHARED", "MAP_ANONYMOUS", "MAP_FIXED", "MAP_NORESERVE",
    "MADV_DONTNEED", "MADV_DONTFORK", "MADV_MERGEABLE", "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE", "MADV_PAGEOUT",
    "SYS_userfaultfd",
    "O_CLOEXEC", "O_NONBLOCK",
)

# C helpers for what Python cannot do safely.  cffi releases the GIL around
# every call, so a Python thread blocked in touch_read() on a missing page
# does not stop the thread that resolves the fault.
_HELPERS_CDEF = """
int uabi_ioctl(int fd, unsigned long request, void *arg);
long uabi_userfaultfd(int flags);
intptr_t uabi_mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, long offset);
int uabi_munmap(uintptr_t addr, size_t len);
int uabi_mprotect(uintptr_t addr, size_t len, int prot);
int uabi_madvise(uintptr_t addr, size_t len, int advice);
int uabi_mlock(uintptr_t addr, size_t len);
uint64_t uabi_touch_read(uintptr_t addr);
void uabi_touch_write(uintptr_t addr, uint64_t value);
int uabi_io_uring_pin(uintptr_t addr, size_t len);
"""

_HELPERS_C = r"""
static int uabi_ioctl(int fd, unsigned long request, void *arg)
{
	int r = ioctl(fd, request, arg);
	return r < 0 ? -errno : r;
}

static long uabi_userfaultfd(int flags)
{
	long r = syscall(SYS_userfaultfd, flags);
	return r < 0 ? -errno : r;
}

static intptr_t uabi_mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, long offset)
{
	void *p = mmap((void *)addr, len, prot, flags, fd, (off_t)offset);
	return p == MAP_FAILED ? -(intptr_t)errno : (intptr_t)p;
}

static int uabi_munmap(uintptr_t addr, size_t len)
{
	return munmap((void *)addr, len) < 0 ? -errno : 0;
}

static int uabi_mprotect(uintptr_t addr, size_t len, int prot)
{
	return mprotect((void *)addr, len, prot) < 0 ? -errno : 0;
}

static int uabi_madvise(uintptr_t addr, size_t len, int advice)
{
	return madvise((void *)addr, len, advice) < 0 ? -errno : 0;
}

static int uabi_mlock(uintptr_t addr, size_t len)
{
	return mlock((void *)addr, len) < 0 ? -errno : 0;
}

static uint64_t uabi_touch_read(uintptr_t addr)
{
	return *(volatile uint64_t *)addr;
}

static void uabi_touch_write(uintptr_t addr, uint64_t value)
{
	*(volatile uint64_t *)addr = value;
}

/* Pin [addr, addr+len) as an io_uring fixed buffer; returns the ring's fd
   (close it to unpin) or -errno. */
static int uabi_io_uring_pin(uintptr_t addr, size_t len)
{
	struct io_uring_params params;
	struct iovec iov = { (void *)addr, len };
	long fd, r;

	memset(&params, 0, sizeof(params));
	fd = syscall(SYS_io_uring_setup, 1, &params);
	if (fd < 0)
		return -errno;
	r = syscall(SYS_io_uring_register, (int)fd, IORING_REGISTER_BUFFERS, &iov, 1);
	if (r < 0) {
		int e = errno;
		close((int)fd);
		return -e;
	}
	return (int)fd;
}
"""

_INCLUDES = """\
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define {guard}
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/ioctl.h>
#include <linux/io_uring.h>
#include <linux/types.h>
"""


def struct_body(struct: Any) -> str:
    """A model struct as C; the bindings and the standalone reproducer both
    use it, so the program a kernel developer runs has the same layout."""
    members = "".join(f"\t{f.ctype.declarator(f.name)};\n" for f in struct.fields)
    return f"struct {struct.name} {{\n{members}}};\n"


def _scalars(spec: Spec) -> list[str]:
    used = {f.ctype.base for s in spec.structs for f in s.fields if f.ctype.struct is None}
    return [name for name in SCALARS if name in used]


def cdef(spec: Spec, extra: Extra = None) -> str:
    """The declarations cffi parses: the model's structs and numbers."""
    out = ["/* generated from the spec by conformance.bindings */\n"]
    out += [f"typedef int... {name};\n" for name in _scalars(spec)]
    out += [struct_body(s) for s in spec.structs]
    out += [f"#define {name} ...\n" for name in spec.values()]
    out += [f"#define {name} ...\n" for name in SYSTEM_CONSTANTS]
    out.append(_HELPERS_CDEF)
    if extra:
        out.append(extra[1])
    return "".join(out)


def c_source(spec: Spec, extra: Extra = None) -> str:
    """The C side: the same structs and numbers, and the compiler's checks
    of the model's layout and request codes."""
    out = [_INCLUDES.format(guard=_GUARD), "\n/* the uABI, from the model */\n"]
    for name, value in spec.values().items():
        out.append(f"#define {name} 0x{value:X}ULL\n")
    for s in spec.structs:
        out.append(struct_body(s))
    out.append("\n/* the model's layout, checked by the compiler */\n")
    for name in _scalars(spec):
        size, signed = SCALARS[name]
        sign = "<" if signed else ">"
        out.append(f'_Static_assert(sizeof({name}) == {size}, "{name}: size");\n')
        out.append(f'_Static_assert(({name})-1 {sign} 0, "{name}: signedness");\n')
    for s in spec.structs:
        out.append(f'_Static_assert(sizeof(struct {s.name}) == {s.size}, "struct {s.name}: size");\n')
        for f in s.fields:
            out.append(f"_Static_assert(offsetof(struct {s.name}, {f.name}) == {f.offset}, "
                       f'"struct {s.name}: offset of {f.name}");\n')
            out.append(f"_Static_assert(sizeof(((struct {s.name} *)0)->{f.name}) == {f.size}, "
                       f'"struct {s.name}: size of {f.name}");\n')
    out.append("\n/* the model's request codes, checked against the kernel's _IOC macros */\n")
    for ioctl in spec.ioctls:
        out.append(f'_Static_assert({ioctl.name} == {ioctl.macro}, "{ioctl.name}: request code");\n')
    out.append(_HELPERS_C)
    if extra:
        out.append(extra[2])
    return "".join(out)


def _digest(spec: Spec, extra: Extra = None) -> str:
    h = hashlib.sha256()
    for part in (cdef(spec, extra), c_source(spec, extra), cffi.__version__,
                 importlib.machinery.EXTENSION_SUFFIXES[0]):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def module_name(spec: Spec, extra: Extra = None) -> str:
    kind = f"{extra[0]}_" if extra else ""
    return f"_uffd_uabi_{kind}{_digest(spec, extra)}"


def build_dir(spec: Spec, extra: Extra = None) -> Path:
    return CACHE / _digest(spec, extra)


def _find_library(directory: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def _compile(spec: Spec, target: Path, extra: Extra = None) -> None:
    """Compile into a private directory, then rename it into place, so a
    reader never sees half a build and two builders cannot collide."""
    name = module_name(spec, extra)
    ffi = cffi.FFI()
    ffi.cdef(cdef(spec, extra))
    ffi.set_source(name, c_source(spec, extra))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        built = Path(ffi.compile(tmpdir=str(work), verbose=False))
        final = work / "out"
        final.mkdir()
        shutil.move(str(built), final / built.name)
        generated = work / f"{name}.c"
        if generated.exists():  # kept for reading, beside the module
            shutil.copy(generated, final / generated.name)
        try:
            os.rename(final, target)
        except OSError:
            if _find_library(target, name) is None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _writable_cache(spec: Spec, extra: Extra = None) -> Path:
    """build/cffi/<hash>, or a directory under the temporary directory when
    the tree is read-only and was not built beforehand."""
    target = build_dir(spec, extra)
    probe = target.parent if target.parent.exists() else REPO
    if os.access(probe, os.W_OK):
        return target
    return Path(tempfile.gettempdir()) / "uffd-uabi-cffi" / target.name


def load(spec: Spec, extra: Extra = None) -> ModuleType:
    """The compiled module (with .ffi and .lib); compiles on first use."""
    name = module_name(spec, extra)
    if name in sys.modules:
        return sys.modules[name]
    target = build_dir(spec, extra)
    library = _find_library(target, name)
    if library is None:
        target = _writable_cache(spec, extra)
        library = _find_library(target, name)
    if library is None:
        _compile(spec, target, extra)
        library = _find_library(target, name)
        if library is None:
            raise RuntimeError(f"cffi build left no module in {target}")
    module_spec = importlib.util.spec_from_file_location(name, library)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
