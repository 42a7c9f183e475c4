"""What a check saw, in the vocabulary of the spec's expectations.

Raw facts only (errno name, the value left in `move`, the sentinel written
before the call); the harness derives the spec's words (len, -errno,
untouched, moved-bytes) from them, so every check judges alike.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import asdict, dataclass, field
from typing import Any

# Written into `move` before a call, so "untouched" is visible: no length
# and no negated errno can look like it.
MOVE_SENTINEL = 0x5A5A5A5A5A5A5A5A


@dataclass
class Observation:
    errno: str | None = None          # None: the call returned 0
    move: int | None = None           # the move field after the call
    move_before: int | None = None    # what the check wrote there before the call
    len: int | None = None            # the len of the call
    memory: str | None = None         # moved | moved-prefix | unchanged | a description of anything else
    wake: str | None = None           # woken | blocked
    huge: str | None = None           # kept | split
    swap: str | None = None           # kept | read-back
    feature: str | None = None        # present | absent
    ioctl_bit: str | None = None      # present | absent
    notes: list[str] = field(default_factory=list)

    def move_class(self) -> str | None:
        """The spec's word for the value left in `move`."""
        if self.move is None:
            return None
        if self.move_before is not None and self.move == self.move_before:
            return "untouched"
        if self.len is not None and self.move == self.len:
            return "len"
        if self.errno and self.move == -getattr(errno_mod, self.errno, 0):
            return "-errno"
        if self.len is not None and 0 < self.move < self.len:
            return "moved-bytes"
        return f"{self.move}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["move_class"] = self.move_class()
        return d
