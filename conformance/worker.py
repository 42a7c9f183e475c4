"""The process the fuzzer's cases run in: started fresh (a small process,
so the forks a case needs stay cheap), it reserves its arena, reports what
the machine offers, then builds and calls one case after another.

A case leaves nothing behind (realize.observe_case undoes it and reserves
the arena afresh), so only a case that hangs or kills the process costs a
new worker.  Messages are pickled frames, each preceded by its length, on
the worker's stdin and stdout; anything else it prints goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .harness import kill_group
from .layout import Arena, Call, Features, Layout
from .oracle import Machine
from .realize import Observed

HEADER = struct.Struct("<Q")
START_TIMEOUT = 60.0


def send(out: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj)
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    data = b""
    while len(data) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the worker did not answer in time")
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the worker is gone")
        data += chunk
    return data


def receive(fd: int, deadline: float | None = None) -> Any:
    (n,) = HEADER.unpack(_read_exactly(fd, HEADER.size, deadline))
    return pickle.loads(_read_exactly(fd, n, deadline))


@dataclass(frozen=True)
class Ready:
    machine: Machine
    features: Features
    arena: Arena
    probes: dict[str, str]


def main(argv: Sequence[str]) -> int:
    """python -m conformance.worker SPEC [OPTION...]"""
    from spec import load

    from .context import make_context
    from .probes import probe_all
    from .realize import features, machine, observe_case, reserve_arena

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not break the frames
    ctx = make_context(load(argv[0]), frozenset(argv[1:]))
    probes = probe_all(ctx)
    mach = machine(ctx)
    arena = reserve_arena(ctx, mach.geometry)
    feats = features(probes)
    send(out, Ready(mach, feats, arena, {n: f"{'ok' if p.ok else 'no'}: {p.detail}" for n, p in probes.items()}))
    stdin = sys.stdin.fileno()
    while True:
        try:
            layout, call = receive(stdin)
        except EOFError:
            return 0
        try:
            obs = observe_case(ctx, mach.geometry, arena, feats, layout, call)
        except Exception as exc:  # noqa: BLE001 - reported, the worker goes on
            obs = Observed(unrealized=f"error in the worker: {type(exc).__name__}: {exc}")
        send(out, obs)


class Worker:
    """The fuzzer's handle on a worker process, restarted when it fails."""

    def __init__(self, spec_path: str | Path, options: Sequence[str] = (), timeout: float = 10.0) -> None:
        self.spec_path, self.options, self.timeout = str(spec_path), tuple(options), timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: Ready | None = None
        self.restarts = 0

    def start(self) -> Ready:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conformance.worker", self.spec_path, *self.options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None
        ready = receive(self.proc.stdout.fileno(), time.monotonic() + START_TIMEOUT)
        assert isinstance(ready, Ready)
        self.ready = ready
        return ready

    def run(self, layout: Layout, call: Call) -> Observed:
        """The case observed; a worker that hangs or dies is replaced and
        the case reported unrealized."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            send(self.proc.stdin, (layout, call))  # type: ignore[arg-type]
            obs = receive(self.proc.stdout.fileno(), time.monotonic() + self.timeout)
            assert isinstance(obs, Observed)
            return obs
        except (TimeoutError, EOFError, BrokenPipeError) as exc:
            self.stop()
            self.restarts += 1
            self.start()
            return Observed(unrealized=f"worker lost: {exc}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        kill_group(proc.pid)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    from conformance.worker import main as _main  # the classes it sends must not live in __main__

    sys.exit(_main(sys.argv[1:]))
