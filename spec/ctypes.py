"""The fixed-width integer types of the uABI (include/uapi/asm-generic/int-ll64.h)
and the natural-alignment layout every Linux ABI gives them.

These are facts of C on Linux, not of userfaultfd, so they live in code; the
spec says which types its fields have, and the layout follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import CType

SCALARS: dict[str, tuple[int, bool]] = {
    "__u8": (1, False), "__s8": (1, True),
    "__u16": (2, False), "__s16": (2, True),
    "__u32": (4, False), "__s32": (4, True),
    "__u64": (8, False), "__s64": (8, True),
}


def scalar(name: str) -> tuple[int, bool]:
    """(size, signed) of a uABI integer type."""
    return SCALARS[name]


def layout(types: Sequence[CType]) -> tuple[list[int], int]:
    """Offsets of members of the given types, and the struct's size, padded
    to its alignment as the C compiler does."""
    offsets = []
    off = 0
    align = 1
    for t in types:
        off = (off + t.align - 1) // t.align * t.align
        offsets.append(off)
        off += t.size
        align = max(align, t.align)
    size = (off + align - 1) // align * align
    return offsets, size
