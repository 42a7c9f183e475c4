"""System state for the opt-in checks, set up for a run and put back after.

Swap and KSM are machine-wide: a runner must not change them unless asked
(`ctx.options`), and must restore them whatever ends the run: an exception,
Ctrl-C, SIGTERM or SIGHUP.  Without opt-ins `prepared` changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from .context import Context

SWAP_PREFIX = "uffd-uabi-swap."
SWAP_SIZE = 64 << 20
KSM = Path("/sys/kernel/mm/ksm")
# ksmd settings for the run: scan often, so a merge shows within seconds.
KSM_SETTINGS = (("sleep_millisecs", "10"), ("pages_to_scan", "1000"), ("run", "1"))
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def _active_swaps() -> list[str]:
    try:
        with open("/proc/swaps") as f:
            return [line.split()[0] for line in f.readlines()[1:] if line.strip()]
    except OSError:
        return []


def swap_free() -> int:
    """Free swap in bytes, from /proc/swaps."""
    free = 0
    try:
        with open("/proc/swaps") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                free += (int(fields[2]) - int(fields[3])) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return free


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_swap() -> None:
    """Swap files a killed run (SIGKILL leaves no chance) left active."""
    tmp = Path(tempfile.gettempdir())
    for path in _active_swaps():
        parent = Path(path).parent
        if parent.parent == tmp and parent.name.startswith(SWAP_PREFIX):
            pid = parent.name[len(SWAP_PREFIX):]
            if pid.isdigit() and not _alive(int(pid)):
                _run("swapoff", path)
                shutil.rmtree(parent, ignore_errors=True)


def _make_swap(undo: list[Callable[[], None]]) -> None:
    _clean_stale_swap()
    if swap_free() > 0:
        return  # the machine has swap: use it as it is
    directory = Path(tempfile.gettempdir()) / f"{SWAP_PREFIX}{os.getpid()}"
    directory.mkdir(mode=0o700)
    undo.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    path = directory / "swapfile"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = bytes(1 << 20)
        for _ in range(SWAP_SIZE // len(chunk)):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    _run("mkswap", str(path))
    _run("swapon", str(path))
    undo.append(lambda: _run("swapoff", str(path)))


def _set_ksm(undo: list[Callable[[], None]]) -> None:
    for name, value in KSM_SETTINGS:
        file = KSM / name
        old = file.read_text().strip()
        undo.append(lambda file=file, old=old: file.write_text(old))
        file.write_text(value)


def _restore(undo: list[Callable[[], None]]) -> None:
    """Undo in reverse order; one failure does not stop the rest."""
    while undo:
        step = undo.pop()
        try:
            step()
        except OSError as exc:
            print(f"uffd-uabi: could not restore system state: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _signals_raise(owner: int) -> Iterator[None]:
    """SIGTERM and SIGHUP end the owner with SystemExit, so the restoring
    code runs; a forked child dies of the signal as it would have."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


# The system changes a run may be granted with --with.
OPTIONS = frozenset({"swap", "ksm"})


@contextlib.contextmanager
def prepared(ctx: Context) -> Iterator[None]:
    """The system state the opted-in checks need, for the length of a run."""
    if not ctx.options & OPTIONS:
        yield
        return
    owner = os.getpid()
    undo: list[Callable[[], None]] = []
    with _signals_raise(owner):
        try:
            if "swap" in ctx.options:
                _make_swap(undo)
            if "ksm" in ctx.options and KSM.exists():
                _set_ksm(undo)
            yield
        finally:
            if os.getpid() == owner:  # never in a forked check
                _restore(undo)
