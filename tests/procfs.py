"""Which processes still exist, from /proc: for the tests that check a run
leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

# Fields of /proc/PID/stat after the ")" that closes the command name (proc(5)).
PGRP = 2
SESSION = 3


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_where(field: int, value: int) -> list[int]:
    """Every process whose stat field `field` (PGRP, SESSION) is `value`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[field]) == value:
                found.append(int(entry.name))
    return found
