"""What every check is handed: the spec, the running kernel, the bindings.

Made once in the parent before any fork, so the cffi module is compiled and
loaded once and every forked check inherits it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from spec import Spec, Version

from . import bindings


@dataclass
class Context:
    spec: Spec
    version: Version             # the running kernel
    release: str                 # os.uname().release
    page_size: int
    options: frozenset[str]      # opt-ins granted: "swap", "ksm"
    module: Any = field(repr=False)  # the compiled cffi module

    @property
    def ffi(self) -> Any:
        return self.module.ffi

    @property
    def lib(self) -> Any:
        return self.module.lib

    @property
    def values(self) -> dict[str, int]:
        """Every named number of the uABI, from the model."""
        return self.spec.values()

    def value(self, name: str) -> int:
        return self.spec.values()[name]


def make_context(spec: Spec, options: frozenset[str] = frozenset()) -> Context:
    release = os.uname().release
    return Context(spec=spec, version=Version.parse(release), release=release,
                   page_size=os.sysconf("SC_PAGE_SIZE"), options=frozenset(options),
                   module=bindings.load(spec))
