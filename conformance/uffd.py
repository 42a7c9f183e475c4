"""A userfaultfd and the ways the checks use it.

Every number (request codes, feature bits, register modes) is read from the
compiled bindings, which the model generated.  Set-up failures raise
OSError: they are errors of the check, not observations of UFFDIO_MOVE.
"""

from __future__ import annotations

import errno as errno_mod
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from .context import Context
from .memory import Region, classify, fill, mapping, read, snapshot
from .observation import MOVE_SENTINEL, Observation

UNPRIVILEGED_SYSCTL = "/proc/sys/vm/unprivileged_userfaultfd"


def errno_name(ret: int) -> str | None:
    """The errno name of a negated error code; None for success."""
    if ret >= 0:
        return None
    return errno_mod.errorcode.get(-ret, str(-ret))


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def _open_flags(ctx: Context) -> int:
    """UFFD_USER_MODE_ONLY where an unprivileged process needs it."""
    flags = ctx.lib.O_CLOEXEC | ctx.lib.O_NONBLOCK
    if os.geteuid() != 0:
        try:
            with open(UNPRIVILEGED_SYSCTL) as f:
                if f.read().strip() == "0":
                    flags |= ctx.lib.UFFD_USER_MODE_ONLY
        except OSError:
            pass
    return flags


def open_fd(ctx: Context) -> int:
    """A new userfaultfd: the system call, or /dev/userfaultfd where the
    system call is missing or refused."""
    flags = _open_flags(ctx)
    fd = ctx.lib.uabi_userfaultfd(flags)
    if fd >= 0:
        return fd
    first = -fd
    try:
        dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        raise OSError(first, f"userfaultfd: {os.strerror(first)}") from None
    try:
        return _check(ctx.lib.uabi_ioctl(dev, ctx.lib.USERFAULTFD_IOC_NEW, ctx.ffi.cast("void *", flags)),
                      "USERFAULTFD_IOC_NEW")
    finally:
        os.close(dev)


class Uffd:
    """One userfaultfd, owned by the process that opened it."""

    def __init__(self, ctx: Context, fd: int) -> None:
        self.ctx = ctx
        self.fd = fd
        self.features = 0   # what UFFDIO_API reported
        self.ioctls = 0

    @classmethod
    def open(cls, ctx: Context, *, features: int | None = 0) -> Uffd:
        """A userfaultfd after UFFDIO_API requesting `features` (None: no
        UFFDIO_API at all)."""
        uffd = cls(ctx, open_fd(ctx))
        if features is not None:
            err = uffd.api(features)
            if err is not None:
                uffd.close()
                raise OSError(getattr(errno_mod, err, 0), f"UFFDIO_API features {features:#x}: {err}")
        return uffd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Uffd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ioctl(self, request: int, arg: Any) -> int:
        return self.ctx.lib.uabi_ioctl(self.fd, request, arg)

    def api(self, features: int = 0) -> str | None:
        """UFFDIO_API; returns the errno name, None on success."""
        arg = self.ctx.ffi.new("struct uffdio_api *")
        arg.api = self.ctx.lib.UFFD_API
        arg.features = features
        err = errno_name(self.ioctl(self.ctx.lib.UFFDIO_API, arg))
        if err is None:
            self.features, self.ioctls = arg.features, arg.ioctls
        return err

    def register(self, region: Region, mode: int | None = None, *, addr: int | None = None,
                 length: int | None = None) -> int:
        """UFFDIO_REGISTER (MISSING by default); returns the range's ioctls."""
        arg = self.ctx.ffi.new("struct uffdio_register *")
        arg.range.start = region.addr if addr is None else addr
        arg.range.len = region.length if length is None else length
        arg.mode = self.ctx.lib.UFFDIO_REGISTER_MODE_MISSING if mode is None else mode
        _check(self.ioctl(self.ctx.lib.UFFDIO_REGISTER, arg), f"UFFDIO_REGISTER {region.label}")
        return arg.ioctls

    def _range(self, struct: str, addr: int, length: int) -> Any:
        arg = self.ctx.ffi.new(f"struct {struct} *")
        arg.range.start = addr
        arg.range.len = length
        return arg

    def wake(self, addr: int, length: int) -> None:
        arg = self.ctx.ffi.new("struct uffdio_range *")
        arg.start, arg.len = addr, length
        _check(self.ioctl(self.ctx.lib.UFFDIO_WAKE, arg), "UFFDIO_WAKE")

    def poison(self, addr: int, length: int) -> None:
        arg = self._range("uffdio_poison", addr, length)
        _check(self.ioctl(self.ctx.lib.UFFDIO_POISON, arg), "UFFDIO_POISON")

    def writeprotect(self, addr: int, length: int) -> None:
        arg = self._range("uffdio_writeprotect", addr, length)
        arg.mode = self.ctx.lib.UFFDIO_WRITEPROTECT_MODE_WP
        _check(self.ioctl(self.ctx.lib.UFFDIO_WRITEPROTECT, arg), "UFFDIO_WRITEPROTECT")

    def move_arg(self, dst: int, src: int, length: int, mode: int = 0, *,
                 move_before: int = MOVE_SENTINEL, at: int | None = None) -> Any:
        """A struct uffdio_move, allocated here or built at address `at`."""
        ffi = self.ctx.ffi
        arg = ffi.new("struct uffdio_move *") if at is None else ffi.cast("struct uffdio_move *", at)
        arg.dst, arg.src, arg.len, arg.mode = dst, src, length, mode
        arg.move = move_before
        return arg

    def move(self, arg: Any) -> str | None:
        """UFFDIO_MOVE with `arg` (a struct pointer or a raw address)."""
        if isinstance(arg, int):
            arg = self.ctx.ffi.cast("void *", arg)
        return errno_name(self.ioctl(self.ctx.lib.UFFDIO_MOVE, arg))

    def read_msg(self, timeout: float) -> Any | None:
        """The next message (a struct uffd_msg), or None after `timeout` s."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        size = self.ctx.ffi.sizeof("struct uffd_msg")
        data = os.read(self.fd, size)
        msg = self.ctx.ffi.new("struct uffd_msg *")
        self.ctx.ffi.memmove(msg, data, size)
        return msg


def observe(ctx: Context, call: Callable[[], tuple[str | None, int | None]], *, dst: int, src: int,
            length: int, regions: tuple[Region, ...], move_before: int | None = MOVE_SENTINEL) -> Observation:
    """Snapshot `regions`, make the call (which returns the errno name and
    the value left in `move`), snapshot again: the raw facts."""
    before = snapshot(ctx, *regions)
    err, moved = call()
    after = snapshot(ctx, *regions)
    return Observation(errno=err, move=moved, move_before=move_before, len=length,
                       memory=classify(ctx, before, after, dst, src, length, moved))


def observe_move(uffd: Uffd, dst: int, src: int, length: int, mode: int = 0, *,
                 regions: tuple[Region, ...], move_before: int = MOVE_SENTINEL,
                 arg: Any = None) -> Observation:
    """UFFDIO_MOVE on `uffd` with a struct made here (or `arg`, already
    filled in), observed."""
    if arg is None:
        arg = uffd.move_arg(dst, src, length, mode, move_before=move_before)
    return observe(uffd.ctx, lambda: (uffd.move(arg), int(arg.move)), dst=dst, src=src,
                   length=length, regions=regions, move_before=int(arg.move))


@dataclass
class Pair:
    """A registered dst and an anonymous src of the same size, with the
    userfaultfd they belong to: the set-up most checks start from."""

    uffd: Uffd
    dst: Region
    src: Region

    @property
    def ctx(self) -> Context:
        return self.uffd.ctx

    def move(self, length: int | None = None, mode: int = 0, *, dst: int | None = None,
             src: int | None = None, move_before: int = MOVE_SENTINEL) -> Observation:
        return observe_move(self.uffd, self.dst.addr if dst is None else dst,
                            self.src.addr if src is None else src,
                            self.src.length if length is None else length, mode,
                            regions=(self.dst, self.src), move_before=move_before)


def make_pair(ctx: Context, pages: int = 1, *, src_pages: tuple[int, ...] | None = None,
              dst_pages: tuple[int, ...] = (), features: int = 0, register_mode: int | None = None,
              align: int | None = None) -> Pair:
    """dst and src of `pages` pages; src filled where `src_pages` says (all
    by default), dst filled where `dst_pages` says before it is registered."""
    uffd = Uffd.open(ctx, features=features)
    dst = mapping(ctx, pages, label="dst", align=align)
    src = mapping(ctx, pages, label="src", align=align)
    fill(ctx, src, src_pages)
    if dst_pages:
        fill(ctx, dst, dst_pages)
    uffd.register(dst, register_mode)
    return Pair(uffd, dst, src)


class Faulter:
    """A thread that reads one address of a registered hole, blocks on the
    missing-page fault, and records whether and when it was woken."""

    def __init__(self, ctx: Context, addr: int) -> None:
        self.ctx = ctx
        self.addr = addr
        self.value: int | None = None
        self.woken_at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulter", daemon=True)

    def _run(self) -> None:
        self.value = self.ctx.lib.uabi_touch_read(self.addr)  # the GIL is released while blocked
        self.woken_at = time.monotonic()
        self._done.set()

    def start(self, uffd: Uffd, timeout: float = 5.0) -> None:
        """Start the thread and return once its fault reached the userfaultfd."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = uffd.read_msg(deadline - time.monotonic())
            if msg is not None and msg.event == self.ctx.lib.UFFD_EVENT_PAGEFAULT and \
                    msg.arg[1] & ~(self.ctx.page_size - 1) == self.addr & ~(self.ctx.page_size - 1):
                return
        raise TimeoutError(f"no page fault at {self.addr:#x} reached the userfaultfd")

    def woken(self, wait: float) -> bool:
        return self._done.wait(wait)

    def state(self, wait: float) -> str:
        """The spec's word: woken within `wait` seconds, or blocked."""
        return "woken" if self.woken(wait) else "blocked"


# Seconds a thread blocked on dst gets to return after a move.  A woken
# thread returns at once; only a thread left blocked costs the whole wait.
WAKE_WAIT = 1.0


def move_under_faulter(ctx: Context, pair: Pair, do_move: Callable[[], Observation]) -> Observation:
    """Make a move while a thread is blocked on a missing page at dst, and
    record whether the move woke it; a thread left blocked is then released
    with UFFDIO_WAKE, and whether that worked is noted."""
    expected = read(ctx, pair.src.addr, 8)
    faulter = Faulter(ctx, pair.dst.addr)
    faulter.start(pair.uffd)
    obs = do_move()
    obs.wake = faulter.state(WAKE_WAIT)
    if obs.wake == "blocked":
        pair.uffd.wake(pair.dst.addr, pair.dst.length)
        obs.notes.append(f"woken by UFFDIO_WAKE: {faulter.woken(WAKE_WAIT)}")
    if faulter.value is not None:
        found = int(faulter.value).to_bytes(8, "little")
        obs.notes.append("the thread read the moved page" if found == expected
                         else f"the thread read {found!r}, not the moved page")
    return obs


def _report(w: int, func: Callable[[], Any]) -> NoReturn:
    """In a forked process: send func()'s result (or its exception) through
    the pipe `w`, then exit without running any of the parent's cleanup."""
    code = 0
    try:
        payload = pickle.dumps(("ok", func()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        payload, code = pickle.dumps(("error", f"{type(exc).__name__}: {exc}")), 1
    try:
        while payload:
            payload = payload[os.write(w, payload):]
    finally:
        os._exit(code)


def _receive(r: int, timeout: float) -> Any:
    """What _report sent, once every writer has closed the pipe."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            raise TimeoutError("the child did not answer in time")
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    if not chunks:
        raise RuntimeError("the child returned nothing")
    status, value = pickle.loads(b"".join(chunks))
    if status != "ok":
        raise RuntimeError(f"in the child: {value}")
    return value


def in_child(func: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run func() in a forked child and return its result; an exception in
    the child is raised here as RuntimeError."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _report(w, func)
    os.close(w)
    try:
        return _receive(r, timeout)
    finally:
        os.close(r)
        _reap(pid)


def in_heir(owner: Callable[[], Any], heir: Callable[[Any], Any], timeout: float = 10.0) -> Any:
    """owner() runs in a forked child, which then forks the heir and exits;
    the heir waits until the owner is gone (its address space torn down),
    runs heir(what owner returned) and its result is returned here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            state = owner()
            gone_r, gone_w = os.pipe()
            if os.fork() == 0:
                os.close(gone_w)
                os.read(gone_r, 1)  # EOF: the owner closed its files, after its mm
                _report(w, lambda: heir(state))
        finally:
            os._exit(0)
    os.close(w)
    try:
        return _receive(r, timeout)
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


@contextmanager
def child_alive() -> Iterator[int]:
    """A forked child that does nothing until the block ends, so pages
    fork() made copy-on-write stay shared meanwhile; yields its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        try:
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        yield pid
    finally:
        os.close(w)
        _reap(pid)
