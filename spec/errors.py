"""The one error type of the spec loader: a position and a message.

Users fix specs in an editor, so every complaint names FILE:LINE:COL (1-based,
as compilers do) and says one thing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    path: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


class SpecError(Exception):
    def __init__(self, where: Position, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
