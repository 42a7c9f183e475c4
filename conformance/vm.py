"""Booting one kernel under QEMU with virtme-ng and running one command in it.

virtme-ng (`vng`) boots the kernel with the host's root file system shared
read-only over 9p, so the guest runs the host's own interpreter and the
project as installed here; one directory per run is shared read-write, and
it is the only thing the guest can write to the host.

The command's output and exit status go through files in that directory,
not through virtme-ng's console: its script ports need udev in the guest
to appear, and without them vng exits 255 whatever the command did.  The
guest script first writes the guest's uptime into `started`, so the host
can tell a kernel that never booted from a command that hangs, and time
the two apart.

Nested KVM can hang at boot on a virtual machine that offers /dev/kvm, so
TCG is the default; `kvm=True` tries KVM and the caller falls back when
the boot does not finish in time (`GuestRun.booted` is False).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL = 0.5          # seconds between looks at the shared directory
KILL_GRACE = 10.0   # seconds between SIGTERM and SIGKILL of the VM's process group

# The files the guest script writes into the shared directory.
STARTED = "started"    # the guest's uptime when the command started
RELEASE = "release"    # uname -r in the guest
STDOUT = "stdout"
STDERR = "stderr"
EXIT = "exit"          # the command's exit status
SCRIPT = "guest.sh"
CONSOLE = "console.log"  # the kernel's console and virtme-ng's own messages
SWAP_DISK = "swap.img"   # the guest's swap, a sparse file beside them


class VmUnavailable(Exception):
    """virtme-ng or QEMU is missing: no kernel but the host's can be checked."""


@dataclass(frozen=True)
class GuestRun:
    accel: str                 # "kvm" or "tcg"
    booted: bool               # the command started in the guest
    exit_code: int | None      # the command's status; None when it did not finish
    boot: float | None         # seconds from launching QEMU to the command's start (host clock)
    guest_uptime: float | None  # the guest's own uptime then: how long the kernel took to boot
    checks: float | None       # seconds the command ran (host clock)
    wall: float                # seconds from launch to the VM's end
    release: str | None        # uname -r in the guest
    problem: str | None        # why there is no exit code, in a few words
    outdir: Path

    @property
    def stdout(self) -> Path:
        return self.outdir / STDOUT

    @property
    def stderr(self) -> Path:
        return self.outdir / STDERR

    @property
    def console(self) -> Path:
        return self.outdir / CONSOLE


def vng_command() -> list[str]:
    """`vng` beside the running interpreter (a venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return [str(here)]
    found = shutil.which("vng")
    if found is None:
        raise VmUnavailable("virtme-ng is not installed (pip install virtme-ng; its command is vng)")
    return [found]


def check_tools() -> None:
    """Raise VmUnavailable naming what is missing to boot a kernel here."""
    vng_command()
    missing = [tool for tool in ("qemu-system-x86_64", "busybox", "depmod")
               if shutil.which(tool, path=_path()) is None]
    if missing:
        raise VmUnavailable(f"missing {', '.join(missing)} (Debian packages qemu-system-x86, "
                            "busybox-static and kmod)")


def _path() -> str:
    """PATH with the interpreter's bin/ (vng runs virtme-run from PATH) and
    the sbin directories (depmod, modprobe) that a non-login shell may lack."""
    parts = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep),
             "/usr/sbin", "/sbin"]
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))


# Swap on the scratch disk: the guest's only virtio-blk disk (vng --disk; the
# root is 9p), found in /sys as the guest has no udev to name it.
SWAP_ON = """\
modprobe -q virtio_blk 2>/dev/null
for try in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/block/vd*; do
    [ -e "$d" ] && dev=/dev/${d##*/}
  done
  [ -n "$dev" ] && [ -b "$dev" ] && break
  sleep 0.5
done
[ -n "$dev" ] && mkswap "$dev" >/dev/null 2>&1 && swapon "$dev" 2>/dev/null"""


def guest_script(argv: Sequence[str], outdir: Path, cwd: Path, env: dict[str, str], swap: bool = False) -> str:
    """The shell script the guest runs: mark the start, run, record the status."""
    out = shlex.quote(str(outdir))
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return "\n".join([
        "#!/bin/sh",
        f"cut -d' ' -f1 /proc/uptime > {out}/{STARTED}.tmp && mv {out}/{STARTED}.tmp {out}/{STARTED}",
        f"uname -r > {out}/{RELEASE}",
        *([SWAP_ON] if swap else []),
        f"cd {shlex.quote(str(cwd))} || exit 1",
        f"env {assignments} {shlex.join(argv)} > {out}/{STDOUT} 2> {out}/{STDERR} < /dev/null",
        f"echo $? > {out}/{EXIT}.tmp && mv {out}/{EXIT}.tmp {out}/{EXIT}",
        "sync",
        "",
    ])


def vng_argv(image: Path, outdir: Path, *, kvm: bool, cpus: int, memory: str,
             append: Sequence[str] = (), disk: Path | None = None) -> list[str]:
    argv = [*vng_command(), "--run", str(image), "--verbose", "--force-9p",
            "--cpus", str(cpus), "--memory", memory, "--rwdir", str(outdir), "--cwd", "/",
            "--exec", f"sh {shlex.quote(str(outdir / SCRIPT))}"]
    if append:
        argv += ["--append", " ".join(append)]
    if disk is not None:
        argv += ["--disk", str(disk)]
    if not kvm:
        argv.insert(argv.index("--verbose"), "--disable-kvm")
    return argv


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies do not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the VM and wait until it is gone: vng, virtme-run and QEMU share
    one process group, and a member may outlive vng (virtme-run cleaning up,
    QEMU after its parent died)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not _group_alive(proc.pid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    proc.wait()


def run(image: Path, argv: Sequence[str], outdir: Path, *, timeout: float, boot_timeout: float,
        kvm: bool = False, cpus: int = 1, memory: str = "1G", append: Sequence[str] = (),
        swap_mb: int = 0, cwd: Path = Path("/"),
        env: dict[str, str] | None = None, progress: Callable[[str, Path], None] | None = None,
        cancel: threading.Event | None = None) -> GuestRun:
    """Boot `image` and run `argv` in it; `outdir` (emptied first) is shared
    read-write at the same path.  `timeout` bounds the whole run,
    `boot_timeout` the time until the command starts; `append` goes on the
    kernel's command line; `swap_mb` gives the guest a scratch disk of that
    size as swap (a sparse file, removed afterwards).  `progress(event,
    outdir)` is called with "booted" once, then "tick" every POLL seconds
    while the command runs.  Setting `cancel` stops the VM."""
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    script = outdir / SCRIPT
    script.write_text(guest_script(argv, outdir, cwd, {"PYTHONUNBUFFERED": "1", **(env or {})}, swap=swap_mb > 0))
    disk = None
    if swap_mb > 0:
        disk = outdir / SWAP_DISK
        with open(disk, "wb") as f:
            f.truncate(swap_mb << 20)
    accel = "kvm" if kvm else "tcg"
    # virtme-ng's temporary files (initramfs, the status port) go here, so a
    # killed VM leaves none in /tmp.
    tmp = Path(tempfile.mkdtemp(prefix="uffd-uabi-vng."))
    start = time.monotonic()
    started_at: float | None = None
    finished_at: float | None = None
    problem: str | None = None
    try:
        with open(outdir / CONSOLE, "wb") as console:
            proc = subprocess.Popen(
                vng_argv(image, outdir, kvm=kvm, cpus=cpus, memory=memory, append=append, disk=disk),
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={**os.environ, "PATH": _path(), "TMPDIR": str(tmp)}, start_new_session=True)
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if started_at is None and (outdir / STARTED).exists():
                        started_at = now
                        if progress:
                            progress("booted", outdir)
                    if (outdir / EXIT).exists():
                        finished_at = now
                        try:  # the command is done; let the VM power off
                            proc.wait(KILL_GRACE)
                        except subprocess.TimeoutExpired:
                            pass
                        break
                    if started_at is None and now - start > boot_timeout:
                        problem = f"did not boot within {boot_timeout:g} s ({accel})"
                        break
                    if cancel is not None and cancel.is_set():
                        problem = "interrupted"
                        break
                    if now - start > timeout:
                        problem = f"killed after {timeout:g} s"
                        break
                    if started_at is not None and progress:
                        progress("tick", outdir)
                    time.sleep(POLL)
            finally:
                _stop(proc)
        end = time.monotonic()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk is not None:
            disk.unlink(missing_ok=True)
    if started_at is None and (outdir / STARTED).exists():
        started_at = end  # it started between the last look and the VM's end
    code = _read(outdir / EXIT)
    exit_code = int(code) if code and code.lstrip("-").isdigit() else None
    if exit_code is not None:
        finished_at = finished_at or end
    elif problem is None:
        problem = ("the VM exited before the command finished" if started_at is not None
                   else f"the VM exited without booting (vng status {proc.returncode})")
    if started_at is None and problem is not None:
        problem += _console_tail(outdir / CONSOLE)  # the last console lines say why
    return GuestRun(
        accel=accel,
        booted=started_at is not None,
        exit_code=exit_code,
        boot=round(started_at - start, 1) if started_at is not None else None,
        guest_uptime=_float(_read(outdir / STARTED)),
        checks=round((finished_at or end) - started_at, 1) if started_at is not None else None,
        wall=round(end - start, 1),
        release=_read(outdir / RELEASE),
        problem=problem,
        outdir=outdir,
    )


# QEMU's own lines that say nothing about why a kernel did not boot.
CONSOLE_NOISE = ("Automatically detecting the format", "Specify the 'raw' format", "terminating on signal")


def _console_tail(path: Path, lines: int = 3) -> str:
    text = _read(path)
    if not text:
        return ""
    tail = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not any(noise in ln for noise in CONSOLE_NOISE)][-lines:]
    return ": " + " | ".join(tail) if tail else ""
